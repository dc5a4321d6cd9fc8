"""Training the learned models (``ptolemy train squares|holes|unet``).

Training data format
--------------------
A folder (searched recursively) of images, each with a JSON file of the same
stem beside it (``grid1/sq_0007.mrc`` + ``grid1/sq_0007.json``). Images: MRC,
TIFF, PNG or JPEG (anything :func:`ptolemy_core.read_image` reads). Images
without a JSON are skipped. Two JSON forms are accepted:

1. **Operator selections** (what a facility has from its own sessions)::

       {"selected": [[x, y], ...]}

   ``[x, y] = [column, row]`` in pixels of that image, one point per square
   (atlas images, for ``squares``) or per hole (square images, for ``holes``
   and ``unet``) the operator chose to collect. Everything the finder detects
   and that contains no selected point counts as *not selected* (unlabelled,
   as in the paper's data). The squares/holes are found by
   :func:`ptolemy_core.find_squares` / :func:`ptolemy_core.find_holes` (so the
   models learn on exactly the crops they will score), a square is selected
   when a point lies in its rectangle, a hole when a point lies within its
   radius. Optional keys: ``"pixel_size_nm"`` (overrides the header),
   ``"i0"`` (vacuum counts).

2. **Simulator truth**, as written by ``ptolemy simulate`` (``"kind": "atlas"``
   with ``"squares"``, or ``"kind": "square"`` with ``"holes"``, each with
   ``center`` [x, y], ``vertices``/``radius``, ``visible_fraction`` and
   ``good``). Positives are the ``good`` ones; every object is labelled, the
   finders are not needed.

``ptolemy_core.train.simdata`` writes such a folder from the simulators with
training seeds (≥ 100000) and parameter ranges distinct from the benchmarks'.

Splits: images are shuffled with the seed; 20 % (at least one) are held out,
the model is trained on the rest, and the held-out ROC AUC is reported. The
square and hole CNNs keep the epoch with the best AUC on that split (early
stopping), so its figure is optimistic; ``benchmarks/`` holds the real held-out.

Other image sources: every training image is also seen once as a *display look*
(:func:`ptolemy_core.train.data.display_look`: another dose/gain, detector
offset, gamma and 8-bit rounding; atlases also another illumination, see
:func:`ptolemy_core.train.data.illumination_look`), with I0 unknown. Together
with the version-2 inputs (:mod:`ptolemy_core.models.crops`) this keeps the
scores from depending on how an image was exposed or saved.
"""
