"""The chapters' own models and recipes, kept apart from the layers in :mod:`dlcourse.nn`.

Each is the model or training recipe a chapter builds and explains. It lives here so the
chapter, its lab, the benchmark and the example script use exactly the same model, not copies
that drift:

- :mod:`dlcourse.models.cnn`: the pooling chapter's MNIST CNN (``mnist_cnn``).
- :mod:`dlcourse.models.generative`: the generative chapter's autoencoders, VAE, GAN losses and
  networks, and the ring of Gaussians.
- :mod:`dlcourse.models.gan`: the GAN training step and loop.
- :mod:`dlcourse.models.lm`: the language-model recipe of the transformers chapter (bigram
  baseline, batches, the training loop, the chapter's configuration and data).
- :mod:`dlcourse.models.train_cnn`: the CNN chapter's model trained end to end as a script,
  one process or several (``torchrun --nproc_per_node=2 -m dlcourse.models.train_cnn``).
"""

from dlcourse.models.cnn import mnist_cnn

__all__ = ["mnist_cnn"]
