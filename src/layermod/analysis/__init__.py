"""From numbers to findings: the modularity curve of a model (:mod:`.curve`, drawn by :mod:`.curve_plot`), the
verdict on each layer (:mod:`.redundancy`), D beside CKA (:mod:`.compare`), curves over training (:mod:`.dynamics`)
and 2-D views of a layer's samples with their kNN graph (:mod:`.views`, :mod:`.embedding`, :mod:`.layer_view`)."""
