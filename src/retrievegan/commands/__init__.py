"""CLI stage implementations: argument parsing only at import; heavy imports (torch) inside the run functions.

Each module declares its stages with ``retrievegan.commands.registry.stage`` (name, help line, arguments, run);
``retrievegan.cli`` lists the modules and builds its parser from their declarations.
"""
