"""Embedding stage: frozen patch features (E_p's input), the co-occurrence embedding F_occur, and the
exact GCN pre-filtering of candidate patches (docs/architecture.md, "Embedding and retrieval")."""
