"""Pairwise patch-compatibility user study (RetrieveGAN paper, Fig. 3).

    streamlit run userstudy/app.py -- --study-dir results/synth/userstudy/study

Everything happens in ``retrievegan.study.ui``; see docs/userstudy.md for deployment.
"""

from retrievegan.study.ui import main

main(__file__)
