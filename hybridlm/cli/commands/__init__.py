"""One module per `hybridlm` command, each with `register(sub)`; cli/app.py lists them."""
