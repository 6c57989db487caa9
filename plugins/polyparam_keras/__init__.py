"""polyparam plugin for keras (work in progress). Importing this module never imports keras."""
