"""dlcourse: the small, GPU-aware PyTorch library behind the course book and its labs.

Start with::

    import dlcourse
    dlcourse.doctor()                 # what is installed, which device you have
    device = dlcourse.get_device()    # CUDA, else Apple MPS, else CPU
    dlcourse.seed_everything(0)       # reproducible runs

Every from-scratch operation is written to be read (``conv2d`` is im2col and one matrix
product, ``lstm`` a loop of ``lstm_cell``, ``cross_entropy`` the log-sum-exp formula). Where a
tuned kernel computes the same thing faster, the readable function hands over to it in one
visible line; the kernels live in the private ``dlcourse._fast`` and are on by default. Set the
environment variable ``DLCOURSE_FAST=0`` to run the readable code only (``1``, the default,
turns the kernels on); ``dlcourse._fast.release_scratch()`` gives back their scratch memory.
"""

from dlcourse.device import get_device, seed_everything
from dlcourse.doctor import doctor

__version__ = "0.1.0"
__all__ = ["get_device", "seed_everything", "doctor", "__version__"]
