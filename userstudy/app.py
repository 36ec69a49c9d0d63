"""Pairwise patch-compatibility user study (RetrieveGAN paper, Fig. 3).

    retrievegan study-serve --study-dir results/synth/userstudy/study [--init]

checks the bundle, consent, secrets and database, then runs ``streamlit run`` on this file from this
folder, so that ``.streamlit/config.toml`` here applies. Everything happens in ``retrievegan.study.ui``;
see docs/userstudy.md for deployment.
"""

from retrievegan.study.ui import main

main(__file__)
