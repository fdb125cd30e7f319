"""Pages people read: a self-contained HTML document (:mod:`.html`) and the page of one or more run directories
(:mod:`.page`)."""
