"""Ollama's own API on the gateway: ``/api/chat``, ``/api/generate`` and the model routes.

:mod:`.requests` parses an Ollama request into the gateway's
:class:`~jarvis_trio.generation.GenerationRequest` (the inverse of
:mod:`jarvis_trio.backends.ollama_wire`), with :mod:`.conversation` for its
messages and tools and :mod:`.options` for its options; :mod:`.ndjson` writes the
answer in Ollama's NDJSON, :mod:`.models` the model listings; all of them are pure.
:mod:`.routes` is the I/O: a blueprint that admits each request through the
same session path as ``/v1/chat/completions``.
"""
