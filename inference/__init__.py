"""The inference library: what the command-line tools (scripts/inpaint.py, style_mix.py,
align_faces.py), the editor and the evaluation's ``--pred`` mode share.

* :mod:`inference.io` - reading photos, masks, sketches and exemplars, mask warnings;
* :mod:`inference.roundtrip` - the any-size round trip (model-size input, paste back inside the
  hole only);
* :mod:`inference.align` - FFHQ-style alignment from 5 landmarks, landmark files;
* :mod:`inference.detect` - the face detector (MTCNN);
* :mod:`inference.photo` - your own photo end to end: find the face, align photo, hole and
  exemplars, complete the crop, warp it back and composite it inside the hole only.
"""
