"""Codecs: per task, the small object that turns user strings into model inputs and model
outputs back into strings (`rnnlab.codecs.base.Codec`). It travels with the model: the
LightningModule holds it and every checkpoint stores its JSON-able state."""
