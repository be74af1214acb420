"""The one-off study scripts, beside the study write-ups (research/*.md): run each as ``python -m research.<name>``."""
