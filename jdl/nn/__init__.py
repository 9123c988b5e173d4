"""Building blocks: activations, initialisers, losses, layers.

Where JAX, Flax or Optax already has a piece, it is re-exported here unchanged
(softmax, Glorot and He initialisers, ``Dropout``, ``BatchNorm``, ``Conv``,
recurrent cells and ``RNN``, ``MultiHeadAttention``, pooling); jdl writes only
what they lack (sign and noisy ReLU, maxout, sparse / spectral-radius / LSTM
forget-bias initialisers, stochastic pooling, separable and asymmetric
convolutions, label smoothing, the perceptron criterion, GAN and VAE losses,
noise injection).
"""

from flax.nnx import MultiHeadAttention as MultiHeadAttention
from flax.nnx import dot_product_attention as dot_product_attention

from jdl.nn import initializers as initializers
from jdl.nn.activations import ACTIVATIONS as ACTIVATIONS
from jdl.nn.activations import Maxout as Maxout
from jdl.nn.activations import NoisyReLU as NoisyReLU
from jdl.nn.activations import get_activation as get_activation
from jdl.nn.activations import identity as identity
from jdl.nn.activations import leaky_relu as leaky_relu
from jdl.nn.activations import log_softmax as log_softmax
from jdl.nn.activations import maxout as maxout
from jdl.nn.activations import noisy_relu as noisy_relu
from jdl.nn.activations import relu as relu
from jdl.nn.activations import sigmoid as sigmoid
from jdl.nn.activations import sign as sign
from jdl.nn.activations import soft_sign as soft_sign
from jdl.nn.activations import softmax as softmax
from jdl.nn.activations import softplus as softplus
from jdl.nn.activations import tanh as tanh
from jdl.nn.augmentation import adversarial_perturbation as adversarial_perturbation
from jdl.nn.augmentation import corrupt as corrupt
from jdl.nn.augmentation import random_translate as random_translate
from jdl.nn.conv import AsymmetricConv as AsymmetricConv
from jdl.nn.conv import Conv as Conv
from jdl.nn.conv import SeparableConv as SeparableConv
from jdl.nn.initializers import get_initializer as get_initializer
from jdl.nn.losses import binary_cross_entropy as binary_cross_entropy
from jdl.nn.losses import cross_entropy as cross_entropy
from jdl.nn.losses import discriminator_loss as discriminator_loss
from jdl.nn.losses import generator_loss as generator_loss
from jdl.nn.losses import kl_divergence_standard_normal as kl_divergence_standard_normal
from jdl.nn.losses import l1_penalty as l1_penalty
from jdl.nn.losses import l2_penalty as l2_penalty
from jdl.nn.losses import label_smoothing_cross_entropy as label_smoothing_cross_entropy
from jdl.nn.losses import mean_squared_error as mean_squared_error
from jdl.nn.losses import negative_log_likelihood as negative_log_likelihood
from jdl.nn.losses import perceptron_loss as perceptron_loss
from jdl.nn.losses import smooth_labels as smooth_labels
from jdl.nn.pooling import StochasticPool as StochasticPool
from jdl.nn.pooling import avg_pool as avg_pool
from jdl.nn.pooling import global_average_pool as global_average_pool
from jdl.nn.pooling import global_max_pool as global_max_pool
from jdl.nn.pooling import max_pool as max_pool
from jdl.nn.pooling import pooling_probabilities as pooling_probabilities
from jdl.nn.pooling import stochastic_pool as stochastic_pool
from jdl.nn.recurrent import RNN as RNN
from jdl.nn.recurrent import Bidirectional as Bidirectional
from jdl.nn.recurrent import GRUCell as GRUCell
from jdl.nn.recurrent import LSTMCell as LSTMCell
from jdl.nn.recurrent import OptimizedLSTMCell as OptimizedLSTMCell
from jdl.nn.recurrent import SimpleCell as SimpleCell
from jdl.nn.recurrent import gru_cell as gru_cell
from jdl.nn.recurrent import lstm_cell as lstm_cell
from jdl.nn.recurrent import recurrent_cell as recurrent_cell
from jdl.nn.recurrent import simple_rnn_cell as simple_rnn_cell
from jdl.nn.recurrent import zero_carry as zero_carry
from jdl.nn.regularization import HIDDEN_KEEP_PROB as HIDDEN_KEEP_PROB
from jdl.nn.regularization import INPUT_KEEP_PROB as INPUT_KEEP_PROB
from jdl.nn.regularization import BatchNorm as BatchNorm
from jdl.nn.regularization import Dropout as Dropout
from jdl.nn.regularization import GaussianNoise as GaussianNoise
from jdl.nn.regularization import LayerNorm as LayerNorm
from jdl.nn.regularization import dropout as dropout

__all__ = [
    "ACTIVATIONS",
    "AsymmetricConv",
    "BatchNorm",
    "Bidirectional",
    "Conv",
    "Dropout",
    "GRUCell",
    "GaussianNoise",
    "HIDDEN_KEEP_PROB",
    "INPUT_KEEP_PROB",
    "LSTMCell",
    "LayerNorm",
    "Maxout",
    "MultiHeadAttention",
    "NoisyReLU",
    "OptimizedLSTMCell",
    "RNN",
    "SeparableConv",
    "SimpleCell",
    "StochasticPool",
    "adversarial_perturbation",
    "avg_pool",
    "binary_cross_entropy",
    "corrupt",
    "cross_entropy",
    "discriminator_loss",
    "dot_product_attention",
    "dropout",
    "generator_loss",
    "get_activation",
    "get_initializer",
    "global_average_pool",
    "global_max_pool",
    "gru_cell",
    "identity",
    "initializers",
    "kl_divergence_standard_normal",
    "l1_penalty",
    "l2_penalty",
    "label_smoothing_cross_entropy",
    "leaky_relu",
    "log_softmax",
    "lstm_cell",
    "max_pool",
    "maxout",
    "mean_squared_error",
    "negative_log_likelihood",
    "noisy_relu",
    "perceptron_loss",
    "pooling_probabilities",
    "random_translate",
    "recurrent_cell",
    "relu",
    "sigmoid",
    "sign",
    "simple_rnn_cell",
    "smooth_labels",
    "soft_sign",
    "softmax",
    "softplus",
    "stochastic_pool",
    "tanh",
    "zero_carry",
]
