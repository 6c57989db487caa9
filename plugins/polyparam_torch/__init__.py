"""polyparam plugin for torch (work in progress). Importing this module never imports torch."""
