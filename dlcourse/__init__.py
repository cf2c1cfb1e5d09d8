"""dlcourse: the small, GPU-aware PyTorch library behind the course book and its labs.

Start with::

    import dlcourse
    dlcourse.doctor()                 # what is installed, which device you have
    device = dlcourse.get_device()    # CUDA, else Apple MPS, else CPU
    dlcourse.seed_everything(0)       # reproducible runs
"""

from dlcourse.device import get_device, seed_everything
from dlcourse.doctor import doctor

__version__ = "0.1.0"
__all__ = ["get_device", "seed_everything", "doctor", "__version__"]
