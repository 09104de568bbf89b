"""A toy model family that lives only in the test suite: two GDN layers (4x
downsampling) and a factorized prior. ``tests/test_families.py`` registers it at run
time, which must be all it takes for the codec, training, export, evaluation and the
command line to work with it (``uqcodec/families.py``)."""
from uqcodec.families import Family

TOY = Family("toy", "toy_family.inference:Toy", "toy_family.training:ToyModel",
             "test-suite toy: two GDN layers, factorized prior", new_model={"N": 8, "M": 8})
