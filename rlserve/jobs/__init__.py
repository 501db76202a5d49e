"""The jobs behind the ``rlserve`` commands: training, sweeps, the service, evaluation, the demo.

``training`` (with ``progress`` and ``results``), ``sweep``, ``service`` (with ``config_file``,
``local_ray``, ``stop_signals`` and ``runtime_dirs``), ``evaluation`` (with ``sources`` and
``actors``), ``demo``, ``bench`` and ``loadgen``. Each takes parsed options and
raises :class:`~formats.errors.RlserveError` subclasses for what the user can fix.
"""
