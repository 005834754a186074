"""SOC/SOH estimation: the per-cell Kalman filter, SOH learners, cell fitting and its CLI.

``Estimator`` (estimator.py) is what the control loop calls every tick; ``EstimationConfig``
(settings.py) is the ``[estimation]`` config section; ``commands.register`` adds ``bmsd
fit-cell`` and ``bmsd estimate``. The method is described in docs/estimation.md.
"""

from bmsd.estimation.estimator import Estimator
from bmsd.estimation.settings import EstimationConfig

__all__ = ["EstimationConfig", "Estimator"]
