"""Everything that needs TensorFlow: training, export and the
decoder of version-1/2 files. Importing ``uqcodec`` for compression and decompression
never imports this package (``uqcodec/codec.py`` and the family modules run on
NumPy and onnxruntime).

* ``linear.py``, ``hyperprior.py``: one family each, its Keras layers and training
  relaxation; ``model.py``: what they share (weight I/O, the forward pass, the noisy
  latent, export of weights and tables); ``priors.py``: the training densities;
  ``widen.py``: growing a hyperprior for warm starts;
* ``data.py``: training crops; ``train.py``: the training loop; ``export.py``: a
  trained model -> a model directory (weights, coding tables, card);
* ``legacy.py``: the TensorFlow pipeline of version-1/2 files.
"""
