"""``ptolemy serve``: Ptolemy's learning-server API for Leginon + our resident worker.

- :mod:`ptolemy_core.server.app` — FastAPI application (``create_app``).
- :mod:`ptolemy_core.server.state` — session state, ids, locking, ranker.
- :mod:`ptolemy_core.server.store` — SQLite persistence in the state directory.
- :mod:`ptolemy_core.server.tables` — square/hole CSV formats, ``save_state`` files.
- :mod:`ptolemy_core.server.client` — standard-library worker client
  (``find_via_worker``, ``start_worker_background``).

Nothing is imported here, so ``ptolemy_core.server.client`` stays cheap to
import from the Leginon scripts (no FastAPI, no scikit-learn).
"""
