"""Pairwise patch-compatibility user study (paper Fig. 3): bundle, plans, storage, app, analysis.

``pool``      the study bundle (every trial anyone may see) built from saved retrievals
``plan``      participant ids and per-participant plans (order, sides, catch trials; stored seed)
``store``     append-only SQLAlchemy storage (SQLite WAL by default, PostgreSQL by URL)
``ui``        the Streamlit pages (``userstudy/app.py`` only calls ``ui.main``)
``simulate``  simulated participants on the synthetic benchmark (labelled simulated everywhere)
``analysis``  preference shares, Wilson / bootstrap intervals, binomial tests, Holm, biases, figure
"""

from retrievegan import __version__

# Recorded with every plan and response; bump the suffix when what participants see changes.
APP_VERSION = f"retrievegan-{__version__}/study-ui-1"
