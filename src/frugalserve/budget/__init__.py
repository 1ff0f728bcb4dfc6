"""Know and cap what a request costs in tokens before it is sent (issue 5).

- :mod:`.vision`   Qwen3-VL's image and video token arithmetic (smart_resize, frame sampling), pure.
- :mod:`.counting` exact prompt token count of a chat or completion request.
- :mod:`.images`   guarded decode, resize to a token budget, re-encode, and the preprocessing cache.
- :mod:`.fetch`    guarded http(s) and data: URL fetching; the one data: URL decoder.
- :mod:`.offload`  large work off the event loop: the size threshold, the thread hop, base64 in pieces.
- :mod:`.limits`   the per-pool ``limits:`` config section.
- :mod:`.prepare`  the one entry point the gateway calls: validate, rewrite, count, cap.

Nothing here imports torch or transformers.
"""

# frugalserve.config defines ConfigError and then imports .limits, which needs ConfigError: load config
# first so that importing a submodule of this package on its own (a test, a benchmark) works.
import frugalserve.config  # noqa: F401
