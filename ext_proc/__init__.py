"""modelguard: an Envoy ext_proc server guarding model-inference traffic."""

__version__ = "0.1.0"
