"""The registry: watchlists, subjects and their reference images, and deployments.

Hosted by the match service, which owns its SQLite file and the vector store:
:class:`~openlfr.registry.service.Registry` keeps the records, the vectors and the audit log in
step and is the match stage's :class:`~openlfr.pipeline.deployments.DeploymentGate`;
:func:`~openlfr.registry.api.make_registry_router` serves it over HTTP;
:mod:`openlfr.registry.client` and :mod:`openlfr.registry.bulk` call that API.
"""
