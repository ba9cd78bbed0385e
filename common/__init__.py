"""Helpers that the shipboard agent, the shore relay and the union's app share.

A leaf package under both sides: it imports neither ``shipboard``, ``shore`` nor
``vessel_relay`` (only ``protocol``, the floor below it), so either side may use it without
depending on the other. The floors are checked in ``.ci/run`` (``lint-imports``, contracts
in ``pyproject.toml``; ``tests/test_import_floors.py`` also refuses any import circle).

- :mod:`common.keyfiles`: 0600 key files written atomically; the published demo keys that
  every config refuses.
- :mod:`common.logs`: text or JSON log lines with correlation ids, never message content.
- :mod:`common.metrics_http`: serving a Prometheus registry.
- :mod:`common.codebooks`: the shipped dictionaries and models as a codebook.
- :mod:`common.exits`: exit codes of every command (78 configuration, 2 usage, 1 the rest).
- :mod:`common.passwords`, :mod:`common.logins`, :mod:`common.csrf`,
  :mod:`common.serving`: the web apps' sign-in, CSRF and uvicorn door.
- :mod:`common.signins`: one sign-in guard per process (wrong PINs and passwords counted
  per person across every door, with a growing back-off).
- :mod:`common.speech`: voice notes' audio: recordings decoded to 8 kHz (PyAV), the
  silence gate, Codec2 (pycodec2), Opus in Ogg for families.
- :mod:`common.http`: request bodies bounded before they are read, JSON parsed with bounded
  depth, integers and text, and the typed refusals that become a 4xx with a sentence.
"""
