"""Networks: scene-graph encoder, layout, generators, discriminators, retrieval; baselines/."""
