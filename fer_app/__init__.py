"""The Gradio app (`python app.py`): uploads, recordings and live mode over the `fer_hf` model.

Modules: `settings` (command line and environment), `model_loading` (which model, its provenance), `server` (the
demo: predict, the data API, the UI), `analysis` (one clip's streamed analysis), `limits` (budgets, quotas, workers),
`media` (remux, detail-plot media), `plots` (figures and words), `render` / `overlay` (the annotated video),
`live` / `live_load` (the Live tab and its load policy), `streaming` / `live_alignment` (the browser's streams on
one clock, live sessions). The Hub payload (`fer_hf/*_fer.py`) never imports this package.
"""
