"""polyparam plugin for mxnet (work in progress). Importing this module never imports mxnet."""
