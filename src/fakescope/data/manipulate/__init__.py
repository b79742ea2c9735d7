"""Local manipulations of real photos: (real image) -> (manipulated image, mask of edited pixels).

Why: a localiser (which pixels of a photo were edited?) needs many (image, mask) pairs, and the
shared data has only 192 CocoGlide triplets. Here real photos are edited locally, in ways that
leave the traces real edits leave, and the mask records where.

    rng = np.random.default_rng(0)
    fake, mask, info = make_pair(img, rng, ManipulationConfig(), autoencoder=load_autoencoder(d))
    real, zero = make_real(img, rng, ManipulationConfig())

Pieces (one module each):
  * masks      `random_mask(h, w, rng, kinds, area)`: box, ellipse, strokes (free-form brush),
               blob (object-like smoothed polygon); the masked fraction of the image lies in `area`.
  * autoencoder  the TinyAutoencoder used by resynthesize, its training and safetensors I/O.
  * mechanisms each `(img uint8 HxWx3, mask HxW, rng, ...) -> uint8 HxWx3`, blended into the
               original through a feathered (Gaussian-blurred) mask:
               resynthesize (through a TinyAutoencoder: a real decoder fingerprint, like
               latent-diffusion inpainting), copy_move, splice, resample, blur, noise.
  * edits      make_pair / make_real: one random edit (or none) plus the same final whole-image JPEG
               re-encoding for both classes, so the edit is not the only compression difference.
  * dataset    generate_dataset: a CocoGlide-like folder (real/, fake/, mask/, table.csv), resumable.

Mask semantics: the returned mask is the binary mask of EDITED pixels: pixels whose blended value
comes at least half from the edit (feathered alpha >= 0.5). It is 1 there even where the new value
happens to equal the old one (a copy-move over flat sky), and 0 in the outer half of the feather
band, where pixels change by less than half the edit.

Everything random is drawn from the numpy Generator passed in, so one seed gives one output.
"""
from __future__ import annotations

from .autoencoder import TinyAutoencoder, default_autoencoder_dir, load_autoencoder, save_autoencoder, train_autoencoder
from .common import DEFAULT_AREA, MASK_KINDS, MAX_SIDE, MECHANISM_NAMES, edited_mask, feather
from .dataset import TABLE_COLUMNS, GenerateReport, generate_dataset
from .edits import ManipulationConfig, available_mechanisms, choose_mechanism, final_reencode, make_pair, make_real
from .masks import mask_shape, random_mask
from .mechanisms import MECHANISMS, blur, copy_move, noise, resample, resynthesize, splice

__all__ = [
    "MASK_KINDS", "MECHANISM_NAMES", "MECHANISMS", "TABLE_COLUMNS", "DEFAULT_AREA", "MAX_SIDE",
    "random_mask", "mask_shape", "feather", "edited_mask",
    "TinyAutoencoder", "train_autoencoder", "save_autoencoder", "load_autoencoder", "default_autoencoder_dir",
    "resynthesize", "copy_move", "splice", "resample", "blur", "noise",
    "ManipulationConfig", "available_mechanisms", "choose_mechanism", "final_reencode",
    "make_pair", "make_real", "generate_dataset", "GenerateReport",
]
