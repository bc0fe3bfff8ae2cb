"""hyperrestart: a patch-based overlay on allenai/hyperdecoders and rabeehk/hyperformer that adds the SGDR restart
scheduler of "Enhancing Language Model Hypernetworks with Restart" (NAACL 2025) and runs them on today's stack."""

__version__ = "0.1.0"
