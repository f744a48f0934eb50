"""Generative models from Su Jianlin's articles, in Keras 3: VAE (+ BN), Gumbel-softmax,
GANs with one loss or two (WGAN-GP, spectral normalisation), and flows (NICE, RealNVP,
Glow, invertible ResNet). Layers and losses use ``keras.ops`` only; train steps are pure
functions of the variable values (:mod:`kerasformer.generative.training`)."""
from kerasformer.generative.flows import (ActNorm, AdditiveCoupling, AffineCoupling, Flow, FlowSequence, Glow,
                                          GlowCoupling, InvertibleConv1x1, InvertibleResidual, Scaling,
                                          bits_per_dim, checkerboard_mask, data_init, parity_mask,
                                          squeeze, standard_normal_log_prob, unsqueeze)
from kerasformer.generative.gan import GAN, LOSSES
from kerasformer.generative.gumbel import GumbelSoftmax, gumbel_noise, gumbel_softmax
from kerasformer.generative.spectral import SpectralDense, update_spectral_norms
from kerasformer.generative.training import TrainStep, split_variables, stateless
from kerasformer.generative.vae import PosteriorBatchNorm, Sampling, kl_divergence
