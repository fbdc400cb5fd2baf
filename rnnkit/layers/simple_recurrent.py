"""TEMPORARY interface shim: replaced by the real implementation (issue 2).

The public API below is the contract the apps code against:
  SimpleRecurrentLayer(units, activation="tanh", ..., return_sequences, return_state,
                       go_backwards, stateful, unroll, zero_output_for_mask)
  layer.step(x_t, h) -> h_next   (single step, no dropout, for in-graph decoders)
  SimpleRecurrentCell(units, ...) usable with keras.layers.RNN
"""

import keras


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRecurrentCell(keras.layers.SimpleRNNCell):
    pass


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRecurrentLayer(keras.layers.SimpleRNN):
    def step(self, x_t, h):
        z = keras.ops.matmul(x_t, self.cell.kernel) + keras.ops.matmul(h, self.cell.recurrent_kernel)
        if self.cell.use_bias:
            z = z + self.cell.bias
        return self.cell.activation(z)
