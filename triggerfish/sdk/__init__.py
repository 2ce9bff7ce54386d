"""What users touch: the Engine, its decorators, function handles and their blocking forms."""
