"""CLI stage implementations: argument parsing only at import; heavy imports (torch) inside ``run``.

Each module exposes ``configure(stage, parser)`` and ``run(stage, args)`` for the stages that
``retrievegan.cli.STAGES`` maps to it.
"""
