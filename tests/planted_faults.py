"""Gradient paths with planted faults, for tests that a checker catches them."""


def flipped_sign(step_fn, variable_index: int):
    """step_fn (as backprop.tape_step) with one variable's gradient of the wrong sign."""

    def faulty(model, x, y, loss, l2=0.0, loss_scale=1.0):
        value, grads, output = step_fn(model, x, y, loss, l2, loss_scale)
        grads = list(grads)
        grads[variable_index] = -grads[variable_index]
        return value, grads, output

    return faulty
