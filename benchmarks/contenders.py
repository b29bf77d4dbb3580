"""The other frameworks a user might train the same MLP with: Keras fit, PyTorch and JAX.

Each `*_steps_per_second(task, ...)` trains the task's MLP (same widths, Glorot-uniform kernels,
zero biases, ReLU, Adam at 1e-3, MSE or softmax cross-entropy) on the task's data, compiles or
warms up first, then times `task.epochs` epochs, with validation after each epoch when the task
has a validation split, and returns optimizer steps per second.  PyTorch and JAX are optional
(the `bench` extra); their functions return None when the package is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time

import numpy as np


@dataclasses.dataclass
class Task:
    """One training shape: data (NumPy), net, batch and how many epochs to time."""

    name: str
    layers: list[int]
    batch: int
    loss: str  # "mse" or "categorical_crossentropy"
    x: np.ndarray  # [n, n_0] float32
    y: np.ndarray  # [n, k] float32, or [n] int32 class ids
    epochs: int  # timed epochs
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- Keras fit
def keras_steps_per_second(task: Task, fast: bool) -> float:
    """keras.Model.fit; fast: steps_per_execution = an epoch and jit_compile=True."""
    import keras

    layers = [keras.layers.Dense(w, activation="relu") for w in task.layers[1:-1]]
    model = keras.Sequential([keras.Input((task.layers[0],)), *layers, keras.layers.Dense(task.layers[-1])])
    loss = "mse" if task.loss == "mse" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    options = {"steps_per_execution": task.steps_per_epoch, "jit_compile": True} if fast else {}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, **options)
    validation = None if task.x_val is None else (task.x_val, task.y_val)
    fit = {"batch_size": task.batch, "verbose": 0, "shuffle": True, "validation_data": validation}
    model.fit(task.x, task.y, epochs=1, **fit)  # warm-up: compile
    start = time.perf_counter()
    model.fit(task.x, task.y, epochs=task.epochs, **fit)
    return task.epochs * task.steps_per_epoch / (time.perf_counter() - start)


# --------------------------------------------------------------------------- PyTorch
def torch_steps_per_second(task: Task) -> float | None:
    """A plain PyTorch loop (eager): zero_grad, forward, loss, backward, Adam.step per batch."""
    if not available("torch"):
        return None
    import torch

    torch.manual_seed(0)
    modules = []
    for a, b in zip(task.layers[:-1], task.layers[1:]):
        modules += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*modules[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss() if task.loss == "mse" else torch.nn.CrossEntropyLoss()
    x, y = (
        torch.from_numpy(task.x),
        torch.from_numpy(task.y).long() if task.loss != "mse" else torch.from_numpy(task.y),
    )
    val = None if task.x_val is None else (torch.from_numpy(task.x_val), torch.from_numpy(task.y_val))

    def epoch():
        order = torch.randperm(len(x))
        for s in range(task.steps_per_epoch):
            rows = order[s * task.batch : (s + 1) * task.batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[rows]), y[rows]).backward()
            optimizer.step()
        if val is not None:
            with torch.no_grad():
                loss_fn(model(val[0]), val[1]).item()

    epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(task.epochs):
        epoch()
    return task.epochs * task.steps_per_epoch / (time.perf_counter() - start)


# --------------------------------------------------------------------------- JAX
def jax_steps_per_second(task: Task) -> float | None:
    """JAX at its fastest: every timed epoch in one jit call, lax.scan over epochs and steps,
    a permutation per epoch and validation at its end, Adam written out."""
    if not available("jax"):
        return None
    import jax
    import jax.numpy as jnp

    params = _jax_init(jax, jnp, task.layers)
    loss_fn = _jax_loss(jax, jnp, task.loss)
    x, y = jnp.asarray(task.x), jnp.asarray(task.y)
    x_val = None if task.x_val is None else jnp.asarray(task.x_val)
    y_val = None if task.y_val is None else jnp.asarray(task.y_val)
    spe, batch = task.steps_per_epoch, task.batch

    def step(carry, rows):
        params, m, v, t = carry
        grads = jax.grad(loss_fn)(params, x[rows], y[rows])
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        scale = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree_util.tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-7), params, m, v)
        return (params, m, v, t), None

    def epoch(carry, key):
        order = jax.random.permutation(key, len(x))[: spe * batch].reshape(spe, batch)
        carry, _ = jax.lax.scan(step, carry, order)
        val = loss_fn(carry[0], x_val, y_val) if x_val is not None else 0.0
        return carry, val

    @jax.jit
    def epochs(carry, keys):
        return jax.lax.scan(epoch, carry, keys)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    carry = (params, zeros, zeros, 0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), task.epochs)
    jax.block_until_ready(epochs(carry, keys))  # warm-up: compile
    start = time.perf_counter()
    jax.block_until_ready(epochs(carry, jax.random.split(jax.random.PRNGKey(1), task.epochs)))
    return task.epochs * spe / (time.perf_counter() - start)


def _jax_init(jax, jnp, layers):
    keys = jax.random.split(jax.random.PRNGKey(0), len(layers))
    params = []
    for key, a, b in zip(keys, layers[:-1], layers[1:]):
        limit = np.sqrt(6 / (a + b))
        params.append((jax.random.uniform(key, (a, b), minval=-limit, maxval=limit), jnp.zeros(b)))
    return params


def _jax_loss(jax, jnp, loss: str):
    def forward(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def mse(params, x, y):
        return jnp.mean((forward(params, x) - y) ** 2)

    def cross_entropy(params, x, y):
        logits = forward(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return mse if loss == "mse" else cross_entropy


# --------------------------------------------------------------------------- matmul
def best_matmul_flops() -> dict[str, float]:
    """FLOP/s of a 2048² float32 matmul: tf.matmul under XLA and NumPy's @ (best of 20 each)."""
    import tensorflow as tf

    n, repeats = 2048, 20
    a = tf.random.normal([n, n])
    matmul = tf.function(lambda a: tf.matmul(a, a), jit_compile=True)
    matmul(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a)
    out.numpy()
    tf_rate = repeats * 2 * n**3 / (time.perf_counter() - start)
    b = np.asarray(a)
    b @ b
    start = time.perf_counter()
    for _ in range(repeats):
        b @ b
    np_rate = repeats * 2 * n**3 / (time.perf_counter() - start)
    return {"tf_matmul_xla": tf_rate, "numpy_matmul": np_rate}
