"""Seeing a run: the trace DAG (``graph``), the recorder that builds it from DSPy's callbacks
(``recorder``), and what an LM call reports about itself (``lm_calls``)."""
