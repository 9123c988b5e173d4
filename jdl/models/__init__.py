"""Models in Flax NNX, and the registry that names them.

Every model is an ``nnx.Module``; :func:`get_model` (or
:func:`jdl.training.from_nnx_factory`) turns one into the training core's pure
``Model(init, apply)``.

- Linear: :class:`Perceptron` (sign activation), :class:`LogisticRegression`.
- Feed-forward: :class:`MLP` (depth, width, activation, dropout, BatchNorm, residual).
- Convolutional: :class:`SmallCNN`, :class:`CNN` (same/valid, 1×1, separable,
  dilated, asymmetric; max/avg/stochastic pooling; dense or global-pooling head),
  :class:`ResNet` / :class:`ResidualBlock` (2-D or 1-D).
- Recurrent: :class:`RecurrentClassifier` (RNN, LSTM, GRU; stacked; bidirectional).
- Attention: :class:`TransformerEncoder` / :class:`TransformerBlock`.
- Autoencoders: :class:`LinearAutoencoder`, :class:`TiedAutoencoder`,
  :class:`DenoisingAutoencoder`; :class:`VAE` with :func:`vae_loss`.
- GAN: :class:`Generator`, :class:`Discriminator`, :func:`init_gan`,
  :func:`make_gan_step`, :func:`generate`.
"""

from jdl.models.autoencoder import DenoisingAutoencoder as DenoisingAutoencoder
from jdl.models.autoencoder import LinearAutoencoder as LinearAutoencoder
from jdl.models.autoencoder import TiedAutoencoder as TiedAutoencoder
from jdl.models.cnn import CNN as CNN
from jdl.models.cnn import SmallCNN as SmallCNN
from jdl.models.gan import Discriminator as Discriminator
from jdl.models.gan import GANState as GANState
from jdl.models.gan import Generator as Generator
from jdl.models.gan import generate as generate
from jdl.models.gan import init_gan as init_gan
from jdl.models.gan import make_gan_step as make_gan_step
from jdl.models.linear import LogisticRegression as LogisticRegression
from jdl.models.linear import Perceptron as Perceptron
from jdl.models.mlp import MLP as MLP
from jdl.models.registry import MODELS as MODELS
from jdl.models.registry import ModelEntry as ModelEntry
from jdl.models.registry import bind as bind
from jdl.models.registry import build_module as build_module
from jdl.models.registry import get_model as get_model
from jdl.models.registry import model_entry as model_entry
from jdl.models.registry import model_options as model_options
from jdl.models.registry import register_model as register_model
from jdl.models.resnet import ResidualBlock as ResidualBlock
from jdl.models.resnet import ResNet as ResNet
from jdl.models.rnn import RecurrentClassifier as RecurrentClassifier
from jdl.models.sequence import as_sequence as as_sequence
from jdl.models.transformer import TransformerBlock as TransformerBlock
from jdl.models.transformer import TransformerEncoder as TransformerEncoder
from jdl.models.transformer import dot_product_attention as dot_product_attention
from jdl.models.vae import VAE as VAE
from jdl.models.vae import VAEOutput as VAEOutput
from jdl.models.vae import vae_loss as vae_loss

__all__ = [
    "CNN",
    "DenoisingAutoencoder",
    "Discriminator",
    "GANState",
    "Generator",
    "LinearAutoencoder",
    "LogisticRegression",
    "MLP",
    "MODELS",
    "ModelEntry",
    "Perceptron",
    "RecurrentClassifier",
    "ResNet",
    "ResidualBlock",
    "SmallCNN",
    "TiedAutoencoder",
    "TransformerBlock",
    "TransformerEncoder",
    "VAE",
    "VAEOutput",
    "as_sequence",
    "bind",
    "build_module",
    "dot_product_attention",
    "generate",
    "get_model",
    "init_gan",
    "make_gan_step",
    "model_entry",
    "model_options",
    "register_model",
    "vae_loss",
]
