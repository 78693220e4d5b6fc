"""vllm_sim: a standard-library-only test double for `vllm serve`.

Used by the sparkfleet lab and unit tests only. It imitates the parts of
vLLM that sparkfleet depends on (the `vllm serve` command line, generated from
the pinned release's fingerprint; multi-node rendezvous; the OpenAI-compatible
HTTP API, /metrics and log lines). It does no inference. The vLLM version it
reports is the fingerprint's release (fingerprint.release_version()).
"""

