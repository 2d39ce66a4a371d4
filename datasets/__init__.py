"""Data for EXE-GAN: image folders and LMDB packs, exemplar pairing, hole masks, augmentation
and the built-in demo faces (docs/datasets.md, docs/architecture.md). Images are float [3, S, S] in [-1, 1];
masks are float [1, H, W] (batches [B, 1, H, W]) with 1 = hole, 0 = known.
"""
from datasets.augment import DiffAugment
from datasets.errors import DatasetError, MaskError
from datasets.exemplars import EvalPairing, ExemplarFolder, TrainingPairing, make_training_pairing
from datasets.folder import ImageFolderDataset
from datasets.lmdb_dataset import LMDBDataset, open_dataset, pack_folder
from datasets.mask_files import BUCKET_LABELS, BUCKETS, MaskFiles, PairedMasks
from datasets.mask_generators import CenterMask, FreeFormMasks, LargeMasks, MaskGenerator
from datasets.masks import MaskSampler, batch_masks, make_mask_generator, validate_mask
from common.seeding import derive_rng, rng_from_state, rng_state, set_rng_state

__all__ = [
    "ImageFolderDataset", "LMDBDataset", "open_dataset", "pack_folder",
    "TrainingPairing", "EvalPairing", "ExemplarFolder", "make_training_pairing",
    "MaskGenerator", "FreeFormMasks", "CenterMask", "LargeMasks", "MaskFiles", "PairedMasks",
    "make_mask_generator", "batch_masks", "MaskSampler", "validate_mask", "BUCKETS",
    "BUCKET_LABELS", "DiffAugment", "DatasetError", "MaskError",
    "rng_state", "set_rng_state", "rng_from_state", "derive_rng",
]
