"""The inference library: what the command-line tools (scripts/inpaint.py, style_mix.py,
align_faces.py), the editor and the evaluation's ``--pred`` mode share.

* :mod:`inference.io` - reading photos, masks, sketches and exemplars, mask warnings;
* :mod:`inference.roundtrip` - the any-size round trip (model-size input, paste back inside the
  hole only) and K samples of one image (:func:`~inference.roundtrip.inpaint_one`);
* :mod:`inference.stylemix` - style mixing through the round trip (exemplar slots i..j from B);
* :mod:`inference.align` - FFHQ-style alignment from 5 landmarks, landmark files;
* :mod:`inference.detect` - the face detector (MTCNN);
* :mod:`inference.photo` - your own photo end to end: find the face, align photo, hole and
  exemplars, complete the crop, warp it back and composite it inside the hole only;
* :mod:`inference.runtime` - which runtime runs the networks (onnxruntime on the CPU, PyTorch);
  :mod:`inference.onnx_export` - the ONNX graphs it runs;
* :mod:`inference.editor` - the editor's request handlers (scripts/editor.py serves them).
"""
