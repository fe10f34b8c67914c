"""xmargin.server: the gRPC service over the optimiser library (needs the ``solver`` extra).

Run it with ``xmargin serve --port 50051`` (or ``python -m xmargin.server``); embed it with::

    from xmargin.server import ServerConfig, build_server
    running = build_server(ServerConfig(port=0))   # started; running.port is the bound port
    ...
    running.stop()
"""

from .admission import AdmissionLimits
from .app import SERVICE_NAME, RunningServer, ServerConfig, build_server, serve
from .convert import Limits
from .scenario_store import RegistrationLimits
from .service import ScenarioRegistry, XmarginServicer
from .solver_pool import SolverPool

__all__ = [
    "SERVICE_NAME",
    "AdmissionLimits",
    "Limits",
    "RegistrationLimits",
    "RunningServer",
    "ScenarioRegistry",
    "ServerConfig",
    "SolverPool",
    "XmarginServicer",
    "build_server",
    "serve",
]
