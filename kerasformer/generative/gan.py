"""GAN training steps for any generator / discriminator pair of Keras models.

Two steps with the same losses:

* :meth:`GAN.alternating_step`: the classic loop, a discriminator step on ``L_D`` and then
  a generator step on ``L_G`` (two forward/backward passes, the generator run twice).
* :meth:`GAN.single_step`: Su Jianlin's "one loss" (训练GAN只需一个loss): with ``sg`` the
  stop-gradient, ``L = L_D(theta_D, sg(G(z))) + L_G(sg(theta_D), G(z))`` -- the first term
  carries no gradient to the generator, the second none to the discriminator's weights (but
  still through its input), so one backward pass yields ``dL_D/dtheta_D`` and ``dL_G/dtheta_G``
  at once, and both optimizers step on them.

Losses (on the discriminator's logits): ``"standard"`` (non-saturating), ``"hinge"``,
``"wgan"`` (critic ``E[D(fake)] - E[D(real)]``, generator ``-E[D(fake)]``); ``gp_weight``
adds WGAN-GP's ``E[(||grad_x D(x_hat)|| - 1)^2]`` on random interpolates of real and fake.
"""
from keras import ops

from kerasformer import backend
from kerasformer.errors import KerasformerError


def _mean(x):
    return ops.mean(ops.reshape(x, (-1,)))


LOSSES = {
    # (discriminator loss(d_real, d_fake), generator loss(d_fake))
    "standard": (lambda r, f: _mean(ops.softplus(-r)) + _mean(ops.softplus(f)),
                 lambda f: _mean(ops.softplus(-f))),
    "hinge": (lambda r, f: _mean(ops.relu(1.0 - r)) + _mean(ops.relu(1.0 + f)),
              lambda f: -_mean(f)),
    "wgan": (lambda r, f: _mean(f) - _mean(r),
             lambda f: -_mean(f)),
}


def _sg(values):
    return [ops.stop_gradient(v) for v in values]


class GAN:
    """``generator(z) -> x`` and ``discriminator(x) -> logits``, both built Keras models.

    Step methods take a real batch and the noise (``z``, and for WGAN-GP ``eps`` of shape
    ``(batch, 1, ...)``) drawn by the caller, update the variables and return a dict of
    losses. The pure gradient functions (``single_gradients``, ``d_gradients``,
    ``g_gradients``) are public for tests and custom loops.
    """

    def __init__(self, generator, discriminator, d_optimizer, g_optimizer, loss="standard", gp_weight=0.0):
        if loss not in LOSSES:
            raise KerasformerError(f"unknown GAN loss {loss!r}; choose one of {sorted(LOSSES)}")
        for model, what in [(generator, "generator"), (discriminator, "discriminator")]:
            if not model.built:
                raise KerasformerError(f"the {what} is not built: call it once on a batch first")
        self.generator, self.discriminator = generator, discriminator
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.d_loss_fn, self.g_loss_fn = LOSSES[loss]
        self.gp_weight = float(gp_weight)
        self.single_gradients = backend.jit(backend.value_and_grad(self._single_loss, has_aux=True))
        self.d_gradients = backend.jit(backend.value_and_grad(self._d_loss, has_aux=True))
        self.g_gradients = backend.jit(backend.value_and_grad(self._g_loss, has_aux=True))

    # ----------------------------------------------------------- pure pieces
    def _G(self, g_values, g_state, z):
        return self.generator.stateless_call(g_values, g_state, z, training=True)

    def _D(self, d_values, d_state, x):
        return self.discriminator.stateless_call(d_values, d_state, x, training=True)

    def _penalty(self, d_values, d_state, real, fake, eps):
        eps, real = ops.convert_to_tensor(eps), ops.convert_to_tensor(real)
        x_hat = eps * real + (1.0 - eps) * fake

        def critic_sum(inputs):
            out, _ = self._D(d_values, d_state, inputs[0])
            return ops.sum(out)

        _, (grad,) = backend.value_and_grad(critic_sum)([x_hat])
        norm = ops.sqrt(ops.sum(ops.reshape(ops.square(grad), (ops.shape(grad)[0], -1)), axis=-1) + 1e-12)
        return _mean(ops.square(norm - 1.0))

    def _d_objective(self, d_values, d_state, real, fake, eps):
        d_real, d_state = self._D(d_values, d_state, real)
        d_fake, d_state = self._D(d_values, d_state, fake)
        loss = self.d_loss_fn(d_real, d_fake)
        gp = self._penalty(d_values, d_state, real, fake, eps) if self.gp_weight else ops.zeros(())
        return loss + self.gp_weight * gp, (loss, gp, d_state)

    def _d_loss(self, d_values, g_values, d_state, g_state, real, z, eps):
        fake, g_state = self._G(g_values, g_state, z)
        total, (loss, gp, d_state) = self._d_objective(d_values, d_state, real, ops.stop_gradient(fake), eps)
        return total, {"d_loss": loss, "gp": gp, "d_state": d_state, "g_state": g_state}

    def _g_loss(self, g_values, d_values, d_state, g_state, z):
        fake, g_state = self._G(g_values, g_state, z)
        d_fake, _ = self._D(_sg(d_values), d_state, fake)
        loss = self.g_loss_fn(d_fake)
        return loss, {"g_loss": loss, "g_state": g_state}

    def _single_loss(self, values, d_state, g_state, real, z, eps):
        n = len(self.discriminator.trainable_variables)
        d_values, g_values = values[:n], values[n:]
        fake, g_state = self._G(g_values, g_state, z)
        d_total, (d_loss, gp, new_d_state) = self._d_objective(d_values, d_state, real, ops.stop_gradient(fake), eps)
        d_fake, _ = self._D(_sg(d_values), d_state, fake)
        g_loss = self.g_loss_fn(d_fake)
        return d_total + g_loss, {"d_loss": d_loss, "g_loss": g_loss, "gp": gp,
                                  "d_state": new_d_state, "g_state": g_state}

    # ------------------------------------------------------------------ steps
    def _values(self):
        d, g = self.discriminator, self.generator
        return ([v.value for v in d.trainable_variables], [v.value for v in g.trainable_variables],
                [v.value for v in d.non_trainable_variables], [v.value for v in g.non_trainable_variables])

    def _finish(self, aux, keys):
        for model, key in [(self.discriminator, "d_state"), (self.generator, "g_state")]:
            if key in aux:
                for v, value in zip(model.non_trainable_variables, aux[key]):
                    v.assign(value)
        return {k: float(backend.to_numpy(aux[k])) for k in keys}

    def _eps(self, real, eps):
        return ops.zeros((ops.shape(real)[0],) + (1,) * (len(real.shape) - 1)) if eps is None else eps

    def single_step(self, real, z, eps=None):
        d_values, g_values, d_state, g_state = self._values()
        (_, aux), grads = self.single_gradients(d_values + g_values, d_state, g_state, real, z, self._eps(real, eps))
        n = len(d_values)
        self.d_optimizer.apply(grads[:n], self.discriminator.trainable_variables)
        self.g_optimizer.apply(grads[n:], self.generator.trainable_variables)
        return self._finish(aux, ["d_loss", "g_loss", "gp"])

    def alternating_step(self, real, z, eps=None):
        d_values, g_values, d_state, g_state = self._values()
        (_, aux), d_grads = self.d_gradients(d_values, g_values, d_state, g_state, real, z, self._eps(real, eps))
        self.d_optimizer.apply(d_grads, self.discriminator.trainable_variables)
        logs = self._finish(aux, ["d_loss", "gp"])
        d_values, g_values, d_state, g_state = self._values()
        (_, aux), g_grads = self.g_gradients(g_values, d_values, d_state, g_state, z)
        self.g_optimizer.apply(g_grads, self.generator.trainable_variables)
        return {**logs, **self._finish(aux, ["g_loss"])}
