"""Saving and opening models, with scvi-tools' signatures and no code run on load."""

from __future__ import annotations

import os
from typing import Literal

import rich
from anndata import AnnData
from mudata import MuData

from ._format import SavedModel, read_folder, write_folder
from ._legacy import read_pickled
from ._utils import reference_var_names, resolve_device

ReferenceCells = Literal["all", "none"] | int


class SaveLoadMixin:
    """``save``, ``load`` and the registry readers of :class:`~scbignn_tools.model.SCBiGNN`.

    Folders are JSON, safetensors and ``.npz`` arrays (``docs/model_format.md``): opening one
    never unpickles, so a folder from a stranger cannot run code.
    """

    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        reference_cells: ReferenceCells = "all",
        **anndata_write_kwargs,
    ) -> None:
        """Save the model to a folder, atomically (a temporary folder beside it, then a rename).

        Parameters
        ----------
        dir_path
            The folder.
        prefix
            Prefix of the file names.
        overwrite
            Replace a model already in the folder.
        save_anndata
            Also write the model's AnnData (``adata.h5ad`` or ``mdata.h5mu``).
        reference_cells
            The reference cells kept for inductive annotation, i.e. what a shared model
            reveals of its training data: ``"all"`` (every cell's normalised expression and
            name), an int ``n`` (a stratified subsample of ``n`` labelled cells per type, with
            the kNN graph rebuilt among them) or ``"none"`` (no cell data: p_theta cannot
            place new cells, so annotation falls back to q_phi and novelty is not measured,
            which :meth:`annotate` says). ``docs/model_format.md`` has the accuracy cost of each.
        **anndata_write_kwargs
            Passed on to the AnnData's writer.

        Examples
        --------
        >>> model.save("my_reference", overwrite=True)
        >>> model.save("my_reference_small", reference_cells=200)  # 200 labelled cells per type
        """
        saved = self._to_saved(reference_cells)
        extra = None
        if save_anndata:
            if self.adata is None:
                raise ValueError("This model has no AnnData to save; use save_anndata=False.")
            name = (
                f"{prefix or ''}{'mdata.h5mu' if isinstance(self.adata, MuData) else 'adata.h5ad'}"
            )

            def extra(tmp):
                self.adata.write(os.path.join(tmp, name), **anndata_write_kwargs)

        write_folder(saved, dir_path, prefix, overwrite, extra)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
    ):
        """Open a model folder written by :meth:`save`. Runs no code from the folder.

        Parameters
        ----------
        dir_path
            The folder.
        adata
            An AnnData laid out like the reference (the reference itself, or a query from
            :meth:`prepare_query_anndata`); it is registered with the saved setup, as
            scvi-tools does. ``None``: the AnnData saved with ``save_anndata=True``, else a
            model without data that annotates any AnnData passed to it. To annotate a query,
            :meth:`load_query_data` is simpler.
        accelerator
            As in scvi-tools.
        device
            As in scvi-tools.
        prefix
            Prefix of the file names.
        backup_url
            Not supported: models are read from local folders only.

        Returns
        -------
        SCBiGNN
            The model, trained, with ``adata`` (or the saved cells' AnnData) registered.

        Examples
        --------
        >>> model = scbignn.model.SCBiGNN.load("my_reference", adata=adata)
        """
        if backup_url is not None:
            raise ValueError("backup_url is not supported; download the folder and pass its path.")
        saved = read_folder(dir_path, prefix)
        if adata is None:
            for name, reader in (("adata.h5ad", "read_h5ad"), ("mdata.h5mu", "read_h5mu")):
                path = os.path.join(dir_path, f"{prefix or ''}{name}")
                if os.path.exists(path):
                    import anndata
                    import mudata

                    adata = getattr(anndata if reader == "read_h5ad" else mudata, reader)(path)
        return cls._from_saved(saved, adata, accelerator, device)

    @staticmethod
    def load_registry(dir_path: str | os.PathLike, prefix: str | None = None) -> dict:
        """The registry of a saved model (its setup), read without unpickling.

        Parameters
        ----------
        dir_path
            The folder.
        prefix
            Prefix of the file names.

        Returns
        -------
        dict
            The registry, as scvi-tools' ``load_registry`` returns it.

        Examples
        --------
        >>> registry = scbignn.model.SCBiGNN.load_registry("my_reference")
        >>> registry["setup_args"]["labels_key"]
        """
        return read_folder(dir_path, prefix).attributes["registry_"]

    @staticmethod
    def view_setup_args(dir_path: str | os.PathLike, prefix: str | None = None) -> None:
        """Print the arguments a saved model's AnnData was set up with.

        Parameters
        ----------
        dir_path
            The folder.
        prefix
            Prefix of the file names.

        Examples
        --------
        >>> scbignn.model.SCBiGNN.view_setup_args("my_reference")
        """
        rich.print(SaveLoadMixin.load_registry(dir_path, prefix)["setup_args"])

    @classmethod
    def convert_pickled_save(
        cls,
        dir_path: str | os.PathLike,
        output_dir_path: str | os.PathLike,
        trust_pickle: bool = False,
        overwrite: bool = False,
        prefix: str | None = None,
    ) -> None:
        """Convert a folder of scbignn-tools 0.1 (pickled ``model.pt``) to the safe format.

        The old file is a pickle. It is read through an unpickler that resolves only the types
        such a folder holds (arrays, tables, tensors) and refuses any other, so code planted in
        it does not run; still, convert only folders whose source you trust, and say so with
        ``trust_pickle=True``. The new folder is in the safe format.

        Parameters
        ----------
        dir_path
            The old folder.
        output_dir_path
            The new folder.
        trust_pickle
            Confirm that the old folder comes from a trusted source.
        overwrite
            Replace a model already in ``output_dir_path``.
        prefix
            Prefix of the old folder's file names (the new folder uses the same).

        Examples
        --------
        >>> scbignn.model.SCBiGNN.convert_pickled_save("old_model", "new_model", trust_pickle=True)
        """
        if not trust_pickle:
            raise ValueError(
                "Converting reads a pickle, which runs any code it holds: pass trust_pickle=True "
                "only for a folder from a source you trust."
            )
        model = cls._from_saved(read_pickled(dir_path, prefix), None, "cpu", "auto")
        model.save(output_dir_path, prefix=prefix, overwrite=overwrite)

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs):
        """Not for this model: use :meth:`convert_pickled_save` for folders of version 0.1."""
        raise NotImplementedError(
            "SCBiGNN folders are converted with SCBiGNN.convert_pickled_save(old, new, "
            "trust_pickle=True)."
        )

    def _to_saved(self, reference_cells: ReferenceCells = "all") -> SavedModel:
        """What a folder holds, from this model.

        The tensors are moved to the CPU but not copied: the writer, or a new module's
        ``load_state_dict``, copies them.
        """
        per_type = isinstance(reference_cells, int) and not isinstance(reference_cells, bool)
        if reference_cells not in ("all", "none") and not per_type:
            raise ValueError(
                f"reference_cells must be 'all', 'none' or a number of cells per type, "
                f"not {reference_cells!r}."
            )
        graph = None if reference_cells == "none" else self.reference_
        if graph is not None and per_type:
            graph = graph.subsample(reference_cells)
        attributes = {
            "registry_": self.registry_,
            "init_params_": self.init_params_,
            "is_trained_": self.is_trained_,
            "gene_selection_": self.gene_selection_,
            "calibration_": self.calibration_,
            "history_": self.history_,
            "reference_": graph,
        }
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        return SavedModel(attributes, reference_var_names(self.registry_), state)

    @classmethod
    def _from_saved(cls, saved: SavedModel, adata, accelerator: str, device: int | str):
        """Build a model from what a folder (or a model in memory) holds."""
        attributes = dict(saved.attributes)
        registry = attributes.pop("registry_")
        if registry.get("model_name", cls.__name__) != cls.__name__:
            raise ValueError(f"The folder holds a {registry['model_name']}, not an {cls.__name__}.")
        init_params = attributes.pop("init_params_")
        if adata is not None:
            method = getattr(cls, registry.get("setup_method_name", "setup_anndata"))
            method(adata, source_registry=registry, **registry["setup_args"])
        model = cls(adata, registry=registry, **init_params["non_kwargs"])
        for key, value in attributes.items():
            setattr(model, key, value)
        model.module.load_state_dict(saved.state_dict)
        model.module.to(resolve_device(accelerator, device))
        model.module.eval()
        model._clear_caches()
        return model
