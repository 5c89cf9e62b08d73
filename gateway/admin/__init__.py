"""The admin plane: teams, keys, mappings, pools and adapters at run time, audited."""
