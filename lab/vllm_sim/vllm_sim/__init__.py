"""vllm_sim: a standard-library-only test double for `vllm serve`.

Used by the sparkfleet lab and unit tests only. It imitates the parts of
vLLM that sparkfleet depends on (CLI flags, multi-node rendezvous, the
OpenAI-compatible HTTP API, /metrics and log lines). It does no inference.
"""

VLLM_SIM_VERSION = "0.11.1rc2.dev0+sparkfleet.sim"

__version__ = VLLM_SIM_VERSION
__all__ = ["VLLM_SIM_VERSION"]
