"""Configuration: the typed sections of a run (`sections`) and `_target_` binding (`binding`)."""
