"""The operation catalog: the single source of truth for what each pymilvus method is.

The proxy, the docs, the detection rules and the SIEM mappings all read this table;
no other module special-cases a method name. Each entry says which category a method
belongs to, whether it changes state, and which of its parameters name the collection,
database and target principal. Parameters are named here and resolved to positions
against the installed pymilvus signatures when a proxy class is built, so one catalog
serves pymilvus 2.6 and 3.x, sync and async.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from milvus_audit.semconv import Category as Category  # re-exported: the catalog names categories


class Action(str, enum.Enum):
    """What a call does, in security terms; detection and SIEM mappings read this."""

    NONE = "none"
    LOGON = "logon"  # connect: authenticates
    LOGOFF = "logoff"  # close
    CREATE = "create"  # creates a server object (collection, index, partition, role, ...)
    DESTROY = "destroy"  # removes a collection, database, partition or all rows
    ACCOUNT_CREATE = "account_create"
    ACCOUNT_DELETE = "account_delete"
    PASSWORD_CHANGE = "password_change"
    ROLE_GRANT = "role_grant"
    ROLE_REVOKE = "role_revoke"
    PRIVILEGE_GRANT = "privilege_grant"
    PRIVILEGE_REVOKE = "privilege_revoke"


class Returns(str, enum.Enum):
    """What a call returns, as far as auditing cares: sessions and iterators make server calls too."""

    PLAIN = "plain"
    SESSION = "session"  # a client pinned to a cluster; its calls are audited
    ITERATOR = "iterator"  # pages fetched by `next()`; each page is audited


class Shape(str, enum.Enum):
    """How a call's request and response are measured (counts only, never contents)."""

    NONE = "none"
    SEARCH = "search"  # vectors in `data` (nq), hits per query returned
    HYBRID_SEARCH = "hybrid_search"  # requests in `reqs`, hits per query returned
    QUERY = "query"  # filter in, rows returned
    GET = "get"  # ids in, rows returned
    WRITE = "write"  # rows in `data`
    DELETE = "delete"  # ids or filter in, delete_count out
    ITERATOR = "iterator"  # returns an iterator; each page is a server round trip


@dataclass(frozen=True, slots=True)
class Operation:
    """What one pymilvus method is, for auditing."""

    name: str
    category: Category
    mutating: bool = False
    local: bool = False
    shape: Shape = Shape.NONE
    collection: str | None = None
    database: str | None = "db_name"
    target_user: str | None = None
    target_role: str | None = None
    privilege: str | None = None
    object_type: str | None = None
    object_name: str | None = None
    fixed_object_type: str | None = None
    privilege_group: str | None = None
    secrets: tuple[str, ...] = ()
    switches_database: bool = False
    returns: Returns = Returns.PLAIN
    action: Action = Action.NONE
    summary: str = ""
    extra_params: Mapping[str, str] = field(default_factory=dict)


_C = "collection_name"


def _op(name: str, category: Category, summary: str, **kw: object) -> Operation:
    return Operation(name=name, category=category, summary=summary, **kw)  # type: ignore[arg-type]


def _local(name: str, summary: str) -> Operation:
    return Operation(name=name, category=Category.OTHER, local=True, summary=summary)


R, W, S, D = Category.DATA_READ, Category.DATA_WRITE, Category.SCHEMA, Category.DATABASE
A, RES, M, CONN = Category.RBAC, Category.RESOURCE, Category.MAINTENANCE, Category.CONNECTION

_ENTRIES: tuple[Operation, ...] = (
    # --- connection -------------------------------------------------------------
    _op("connect", CONN, "Client construction: connects and authenticates.", database=None,
        action=Action.LOGON),
    _op("close", CONN, "Closes the client's connection.", database=None, action=Action.LOGOFF),
    _op("session", CONN, "Opens a session pinned to a cluster; its calls are audited.",
        database=None, returns=Returns.SESSION),
    _op("get_server_version", CONN, "Reads the server version."),
    _op("get_server_type", CONN, "Reads the server type.", database=None),
    _op("use_database", CONN, "Switches the client's current database.", switches_database=True),
    _op("using_database", CONN, "Switches the client's current database.", switches_database=True),
    # --- data reads -------------------------------------------------------------
    _op("search", R, "Vector similarity search.", shape=Shape.SEARCH, collection=_C),
    _op("hybrid_search", R, "Multi-vector search with reranking.", shape=Shape.HYBRID_SEARCH, collection=_C),
    _op("query", R, "Scalar query by filter or ids.", shape=Shape.QUERY, collection=_C),
    _op("get", R, "Reads rows by primary key.", shape=Shape.GET, collection=_C),
    _op("query_iterator", R, "Pages through rows matching a filter; every page is audited.",
        shape=Shape.ITERATOR, collection=_C, returns=Returns.ITERATOR),
    _op("search_iterator", R, "Pages through search hits; every page is audited.",
        shape=Shape.ITERATOR, collection=_C, returns=Returns.ITERATOR),
    _op("run_analyzer", R, "Runs a text analyzer on the server.", collection=_C),
    # --- data writes ------------------------------------------------------------
    _op("insert", W, "Inserts rows.", mutating=True, shape=Shape.WRITE, collection=_C),
    _op("upsert", W, "Inserts or replaces rows.", mutating=True, shape=Shape.WRITE, collection=_C),
    _op("delete", W, "Deletes rows by ids or filter.", mutating=True, shape=Shape.DELETE, collection=_C),
    _op("truncate_collection", W, "Removes every row of a collection.", mutating=True, collection=_C,
        action=Action.DESTROY),
    # --- schema -----------------------------------------------------------------
    _op("create_collection", S, "Creates a collection.", mutating=True, collection=_C, action=Action.CREATE),
    _op("drop_collection", S, "Drops a collection and its data.", mutating=True, collection=_C, action=Action.DESTROY),
    _op("rename_collection", S, "Renames a collection.", mutating=True, collection="old_name",
        extra_params={"new_name": "milvus_audit.new_name", "target_db": "milvus_audit.target_db"}),
    _op("has_collection", S, "Checks whether a collection exists.", collection=_C),
    _op("describe_collection", S, "Describes a collection's schema.", collection=_C),
    _op("list_collections", S, "Lists collections."),
    _op("get_collection_stats", S, "Reads a collection's row count.", collection=_C),
    _op("alter_collection_properties", S, "Changes collection properties.", mutating=True, collection=_C),
    _op("drop_collection_properties", S, "Removes collection properties.", mutating=True, collection=_C),
    _op("add_collection_field", S, "Adds a field to a collection.", mutating=True, collection=_C),
    _op("alter_collection_field", S, "Changes a field's properties.", mutating=True, collection=_C),
    _op("drop_collection_field", S, "Drops a field from a collection.", mutating=True, collection=_C),
    _op("add_collection_struct_field", S, "Adds a struct field to a collection.", mutating=True, collection=_C),
    _op("add_collection_function", S, "Adds a function to a collection.", mutating=True, collection=_C),
    _op("alter_collection_function", S, "Changes a collection function.", mutating=True, collection=_C),
    _op("drop_collection_function", S, "Drops a collection function.", mutating=True, collection=_C),
    _op("add_function_field", S, "Adds a function output field.", mutating=True, collection=_C),
    _op("drop_function_field", S, "Drops a function output field.", mutating=True, collection=_C),
    _op("create_partition", S, "Creates a partition.", mutating=True, collection=_C, action=Action.CREATE),
    _op("drop_partition", S, "Drops a partition and its data.", mutating=True, collection=_C, action=Action.DESTROY),
    _op("has_partition", S, "Checks whether a partition exists.", collection=_C),
    _op("list_partitions", S, "Lists a collection's partitions.", collection=_C),
    _op("get_partition_stats", S, "Reads a partition's row count.", collection=_C),
    _op("create_alias", S, "Creates a collection alias.", mutating=True, collection=_C, action=Action.CREATE),
    _op("alter_alias", S, "Points an alias at another collection.", mutating=True, collection=_C),
    _op("drop_alias", S, "Drops a collection alias.", mutating=True),
    _op("describe_alias", S, "Describes an alias."),
    _op("list_aliases", S, "Lists aliases.", collection=_C),
    _op("create_index", S, "Builds an index.", mutating=True, collection=_C, action=Action.CREATE),
    _op("drop_index", S, "Drops an index.", mutating=True, collection=_C),
    _op("describe_index", S, "Describes an index.", collection=_C),
    _op("list_indexes", S, "Lists a collection's indexes.", collection=_C),
    _op("alter_index_properties", S, "Changes index properties.", mutating=True, collection=_C),
    _op("drop_index_properties", S, "Removes index properties.", mutating=True, collection=_C),
    # --- database ---------------------------------------------------------------
    _op("create_database", D, "Creates a database.", mutating=True, action=Action.CREATE),
    _op("drop_database", D, "Drops a database.", mutating=True, action=Action.DESTROY),
    _op("list_databases", D, "Lists databases.", database=None),
    _op("describe_database", D, "Describes a database."),
    _op("alter_database_properties", D, "Changes database properties.", mutating=True),
    _op("drop_database_properties", D, "Removes database properties.", mutating=True),
    # --- rbac and accounts ------------------------------------------------------
    _op("create_user", A, "Creates a user (the password is never recorded).", mutating=True,
        target_user="user_name", secrets=("password",), action=Action.ACCOUNT_CREATE),
    _op("drop_user", A, "Drops a user.", mutating=True, target_user="user_name", action=Action.ACCOUNT_DELETE),
    _op("update_password", A, "Changes a user's password (never recorded).", mutating=True,
        target_user="user_name", secrets=("old_password", "new_password"), action=Action.PASSWORD_CHANGE),
    _op("update_user", A, "Changes a user's description.", mutating=True, target_user="user_name"),
    _op("describe_user", A, "Describes a user and its roles.", target_user="user_name"),
    _op("list_users", A, "Lists users."),
    _op("create_role", A, "Creates a role.", mutating=True, target_role="role_name", action=Action.CREATE),
    _op("drop_role", A, "Drops a role.", mutating=True, target_role="role_name"),
    _op("alter_role", A, "Changes a role's description.", mutating=True, target_role="role_name"),
    _op("describe_role", A, "Describes a role's privileges.", target_role="role_name"),
    _op("list_roles", A, "Lists roles."),
    _op("grant_role", A, "Grants a role to a user.", mutating=True, target_user="user_name",
        target_role="role_name", action=Action.ROLE_GRANT),
    _op("revoke_role", A, "Revokes a role from a user.", mutating=True, target_user="user_name",
        target_role="role_name", action=Action.ROLE_REVOKE),
    _op("grant_privilege", A, "Grants a privilege on an object to a role.", mutating=True,
        target_role="role_name", privilege="privilege", object_type="object_type",
        object_name="object_name", action=Action.PRIVILEGE_GRANT),
    _op("revoke_privilege", A, "Revokes a privilege on an object from a role.", mutating=True,
        target_role="role_name", privilege="privilege", object_type="object_type",
        object_name="object_name", action=Action.PRIVILEGE_REVOKE),
    _op("grant_privilege_v2", A, "Grants a privilege on a collection to a role.", mutating=True,
        target_role="role_name", privilege="privilege", object_name=_C,
        fixed_object_type="Collection", action=Action.PRIVILEGE_GRANT),
    _op("revoke_privilege_v2", A, "Revokes a privilege on a collection from a role.", mutating=True,
        target_role="role_name", privilege="privilege", object_name=_C,
        fixed_object_type="Collection", action=Action.PRIVILEGE_REVOKE),
    _op("create_privilege_group", A, "Creates a privilege group.", mutating=True,
        privilege_group="group_name", action=Action.CREATE),
    _op("drop_privilege_group", A, "Drops a privilege group.", mutating=True,
        privilege_group="group_name"),
    _op("list_privilege_groups", A, "Lists privilege groups."),
    _op("add_privileges_to_group", A, "Adds privileges to a group.", mutating=True,
        privilege_group="group_name", privilege="privileges", action=Action.PRIVILEGE_GRANT),
    _op("remove_privileges_from_group", A, "Removes privileges from a group.", mutating=True,
        privilege_group="group_name", privilege="privileges", action=Action.PRIVILEGE_REVOKE),
    # --- resource management ----------------------------------------------------
    _op("load_collection", RES, "Loads a collection into memory.", mutating=True, collection=_C),
    _op("release_collection", RES, "Releases a collection from memory.", mutating=True, collection=_C),
    _op("load_partitions", RES, "Loads partitions into memory.", mutating=True, collection=_C),
    _op("release_partitions", RES, "Releases partitions from memory.", mutating=True, collection=_C),
    _op("refresh_load", RES, "Refreshes a loaded collection.", mutating=True, collection=_C),
    _op("get_load_state", RES, "Reads a collection's load state.", collection=_C),
    _op("create_resource_group", RES, "Creates a resource group.", mutating=True, action=Action.CREATE),
    _op("drop_resource_group", RES, "Drops a resource group.", mutating=True),
    _op("update_resource_groups", RES, "Reconfigures resource groups.", mutating=True),
    _op("describe_resource_group", RES, "Describes a resource group."),
    _op("list_resource_groups", RES, "Lists resource groups."),
    _op("transfer_replica", RES, "Moves replicas between resource groups.", mutating=True, collection=_C),
    _op("describe_replica", RES, "Describes a collection's replicas.", collection=_C),
    _op("add_file_resource", RES, "Registers a file resource.", mutating=True),
    _op("remove_file_resource", RES, "Removes a file resource.", mutating=True),
    _op("list_file_resources", RES, "Lists file resources."),
    # --- maintenance ------------------------------------------------------------
    _op("flush", M, "Seals a collection's growing segments.", mutating=True, collection=_C),
    _op("flush_all", M, "Flushes every collection.", mutating=True),
    _op("get_flush_all_state", M, "Reads flush_all progress."),
    _op("compact", M, "Starts a compaction.", mutating=True, collection=_C),
    _op("get_compaction_state", M, "Reads a compaction's state."),
    _op("get_compaction_plans", M, "Reads a compaction's plans."),
    _op("list_compaction_tasks", M, "Lists compaction tasks.", collection=_C),
    _op("optimize", M, "Compacts and rebuilds a collection.", mutating=True, collection=_C),
    _op("list_segments", M, "Lists a collection's loaded segments.", collection=_C),
    _op("list_loaded_segments", M, "Lists a collection's loaded segments.", collection=_C),
    _op("list_persistent_segments", M, "Lists a collection's persisted segments.", collection=_C),
    _op("create_snapshot", M, "Creates a collection snapshot.", mutating=True, collection=_C, action=Action.CREATE),
    _op("drop_snapshot", M, "Drops a collection snapshot.", mutating=True, collection=_C),
    _op("describe_snapshot", M, "Describes a snapshot.", collection=_C),
    _op("list_snapshots", M, "Lists snapshots.", collection=_C),
    _op("restore_snapshot", M, "Restores a snapshot into a collection.", mutating=True,
        collection="target_collection_name", database="target_db_name"),
    _op("get_restore_snapshot_state", M, "Reads a snapshot restore's state."),
    _op("list_restore_snapshot_jobs", M, "Lists snapshot restore jobs.", collection=_C),
    _op("pin_snapshot_data", M, "Pins a snapshot's data.", mutating=True, collection=_C),
    _op("unpin_snapshot_data", M, "Unpins a snapshot's data.", mutating=True),
    _op("refresh_external_collection", M, "Refreshes an external collection.", mutating=True,
        collection=_C),
    _op("get_refresh_external_collection_progress", M, "Reads an external refresh's progress."),
    _op("list_refresh_external_collection_jobs", M, "Lists external refresh jobs.", collection=_C),
    _op("get_replicate_configuration", M, "Reads the cross-cluster replication setup."),
    _op("update_replicate_configuration", M, "Changes the cross-cluster replication setup.",
        mutating=True),
    _op("get_replicate_info", M, "Reads replication progress."),
    _op("dump_messages", M, "Reads raw WAL messages from a channel."),
    # --- bulk import (reached through the ORM's utility module) ----------------
    _op("bulk_insert", W, "Starts a bulk import of files into a collection.", mutating=True, collection=_C),
    _op("get_bulk_insert_state", W, "Reads a bulk import's state."),
    _op("list_bulk_insert_tasks", W, "Lists bulk import tasks.", collection=_C),
    # --- local helpers: no server call, not audited -----------------------------
    _local("create_schema", "Builds a schema object locally."),
    _local("create_field_schema", "Builds a field schema object locally."),
    _local("create_struct_field_schema", "Builds a struct field schema object locally."),
    _local("prepare_index_params", "Builds index parameters locally."),
)

CATALOG: Mapping[str, Operation] = {op.name: op for op in _ENTRIES}

# Calls made through iterator objects returned by query_iterator/search_iterator.
ITERATOR_METHODS: Mapping[str, bool] = {"next": True, "close": False}


def lookup(name: str) -> Operation:
    """The catalog entry for `name`; an unknown public method is audited as `other`."""
    op = CATALOG.get(name)
    if op is None:
        op = Operation(name=name, category=Category.OTHER, summary="Not in the catalog.")
    return op


def operations() -> Iterator[Operation]:
    return iter(_ENTRIES)


# --- the server's RPCs ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rpc:
    """A MilvusService RPC as the server's access log names it (`$method_name`), and what it is.

    `operation` is the catalog operation the RPC belongs to (`db.operation.name` of a server
    record), None when several share it and the log cannot tell which (OperateUserRole grants
    or revokes); `serves` lists every catalog operation that sends it (a refused call is
    joined to a client record of one of these)."""

    name: str
    operation: str | None
    category: Category
    mutating: bool
    action: Action
    serves: tuple[str, ...]

    @property
    def destructive(self) -> bool:
        return self.action is Action.DESTROY


def _rpc(name: str, operation: str, *also: str) -> Rpc:
    op = CATALOG[operation]
    return Rpc(name, operation, op.category, op.mutating, op.action, (operation, *also))


def _rpc_of(name: str, serves: tuple[str, ...], category: Category | None = None,
            mutating: bool | None = None) -> Rpc:
    """An RPC several operations send (or none of the catalog's: `serves=()`)."""
    ops = [CATALOG[s] for s in serves]
    return Rpc(name, None, category or ops[0].category,
               any(op.mutating for op in ops) if mutating is None else mutating, Action.NONE, serves)


_RPCS: tuple[Rpc, ...] = (
    # connection
    _rpc("Connect", "connect"),
    _rpc("GetVersion", "get_server_version"),
    _rpc_of("CheckHealth", (), CONN, False),
    _rpc_of("GetComponentStates", (), CONN, False),
    _rpc_of("AllocTimestamp", (), Category.OTHER, False),
    # reads
    _rpc("Search", "search", "search_iterator"),
    _rpc("HybridSearch", "hybrid_search"),
    _rpc("Query", "query", "get", "query_iterator", "search_iterator"),
    _rpc("RunAnalyzer", "run_analyzer"),
    _rpc_of("CalcDistance", (), R, False),
    # writes
    _rpc("Insert", "insert"),
    _rpc("Upsert", "upsert"),
    _rpc("Delete", "delete"),
    _rpc("TruncateCollection", "truncate_collection"),
    _rpc("Import", "bulk_insert"),
    _rpc("GetImportState", "get_bulk_insert_state"),
    _rpc("ListImportTasks", "list_bulk_insert_tasks"),
    # schema
    _rpc("CreateCollection", "create_collection"),
    _rpc("DropCollection", "drop_collection"),
    _rpc("HasCollection", "has_collection"),
    _rpc("DescribeCollection", "describe_collection", "create_collection", "load_collection", "get_load_state",
         "has_collection", "insert", "upsert", "search", "query", "get", "delete", "hybrid_search",
         "query_iterator", "search_iterator", "create_index", "flush"),
    _rpc("ShowCollections", "list_collections", "get_load_state", "has_collection"),
    _rpc("GetCollectionStatistics", "get_collection_stats"),
    _rpc_of("AlterCollection", ("alter_collection_properties", "drop_collection_properties")),
    _rpc("RenameCollection", "rename_collection"),
    _rpc("AddCollectionField", "add_collection_field"),
    _rpc("AlterCollectionField", "alter_collection_field"),
    _rpc("CreatePartition", "create_partition"),
    _rpc("DropPartition", "drop_partition"),
    _rpc("HasPartition", "has_partition"),
    _rpc("ShowPartitions", "list_partitions", "get_load_state"),
    _rpc("GetPartitionStatistics", "get_partition_stats"),
    _rpc("CreateAlias", "create_alias"),
    _rpc("DropAlias", "drop_alias"),
    _rpc("AlterAlias", "alter_alias"),
    _rpc("DescribeAlias", "describe_alias"),
    _rpc("ListAliases", "list_aliases"),
    _rpc("CreateIndex", "create_index", "create_collection"),
    _rpc("DropIndex", "drop_index"),
    _rpc("DescribeIndex", "describe_index", "create_index", "list_indexes"),
    _rpc("GetIndexState", "describe_index", "create_index"),
    _rpc("GetIndexBuildProgress", "describe_index", "create_index"),
    _rpc("GetIndexStatistics", "describe_index"),
    _rpc_of("AlterIndex", ("alter_index_properties", "drop_index_properties")),
    # database
    _rpc("CreateDatabase", "create_database"),
    _rpc("DropDatabase", "drop_database"),
    _rpc("ListDatabases", "list_databases", "connect"),
    _rpc("DescribeDatabase", "describe_database"),
    _rpc_of("AlterDatabase", ("alter_database_properties", "drop_database_properties")),
    # rbac
    _rpc("CreateCredential", "create_user"),
    _rpc("UpdateCredential", "update_password"),
    _rpc("DeleteCredential", "drop_user"),
    _rpc("ListCredUsers", "list_users"),
    _rpc("CreateRole", "create_role"),
    _rpc("DropRole", "drop_role"),
    _rpc_of("OperateUserRole", ("grant_role", "revoke_role")),
    _rpc_of("SelectRole", ("list_roles", "describe_role")),
    _rpc_of("SelectUser", ("describe_user", "list_users")),
    _rpc_of("OperatePrivilege", ("grant_privilege", "revoke_privilege")),
    _rpc_of("OperatePrivilegeV2", ("grant_privilege_v2", "revoke_privilege_v2")),
    _rpc("SelectGrant", "describe_role"),
    _rpc("CreatePrivilegeGroup", "create_privilege_group"),
    _rpc("DropPrivilegeGroup", "drop_privilege_group"),
    _rpc("ListPrivilegeGroups", "list_privilege_groups"),
    _rpc_of("OperatePrivilegeGroup", ("add_privileges_to_group", "remove_privileges_from_group")),
    _rpc_of("BackupRBAC", (), A, False),
    _rpc_of("RestoreRBAC", (), A, True),
    # resource management
    _rpc("LoadCollection", "load_collection", "create_collection"),
    _rpc("ReleaseCollection", "release_collection"),
    _rpc("LoadPartitions", "load_partitions"),
    _rpc("ReleasePartitions", "release_partitions"),
    _rpc("GetLoadingProgress", "get_load_state", "load_collection", "create_collection", "load_partitions"),
    _rpc("GetLoadState", "get_load_state", "load_collection", "create_collection", "load_partitions"),
    _rpc("CreateResourceGroup", "create_resource_group"),
    _rpc("DropResourceGroup", "drop_resource_group"),
    _rpc("UpdateResourceGroups", "update_resource_groups"),
    _rpc("TransferNode", "update_resource_groups"),
    _rpc("TransferReplica", "transfer_replica"),
    _rpc("ListResourceGroups", "list_resource_groups"),
    _rpc("DescribeResourceGroup", "describe_resource_group"),
    _rpc("GetReplicas", "describe_replica"),
    _rpc("LoadBalance", "transfer_replica"),
    _rpc("AddFileResource", "add_file_resource"),
    _rpc("RemoveFileResource", "remove_file_resource"),
    _rpc("ListFileResources", "list_file_resources"),
    # maintenance
    _rpc("Flush", "flush"),
    _rpc("FlushAll", "flush_all"),
    _rpc_of("GetFlushState", ("flush",), M, False),
    _rpc("GetFlushAllState", "get_flush_all_state", "flush_all"),
    _rpc("ManualCompaction", "compact"),
    _rpc("GetCompactionState", "get_compaction_state", "compact"),
    _rpc("GetCompactionStateWithPlans", "get_compaction_plans"),
    _rpc("GetPersistentSegmentInfo", "list_persistent_segments"),
    _rpc("GetQuerySegmentInfo", "list_loaded_segments"),
    _rpc_of("GetMetrics", (), M, False),
    _rpc_of("ListIndexedSegment", (), M, False),
    _rpc_of("DescribeSegmentIndexData", (), M, False),
    _rpc_of("ReplicateMessage", (), M, True),
)

RPCS: Mapping[str, Rpc] = {rpc.name: rpc for rpc in _RPCS}
_RPCS_OF: dict[str, tuple[str, ...]] = {}
for _each in _RPCS:
    for _served in _each.serves:
        _RPCS_OF[_served] = (*_RPCS_OF.get(_served, ()), _each.name)


# Operations that may send no RPC although they usually do: pymilvus shares one connection
# between clients with the same URI and credentials, and a client that reuses one connects
# without a Connect RPC. A missing server line does not make them unconfirmed.
RPC_OPTIONAL: frozenset[str] = frozenset({"connect"})


def rpcs_of(operation: str) -> tuple[str, ...]:
    """The RPCs a catalog operation sends (empty for calls answered by the client alone: close)."""
    return _RPCS_OF.get(operation, ())


def rpc_lookup(name: str) -> Rpc:
    """What the server RPC `name` is; an RPC this catalog does not know is `other`, read-only."""
    rpc = RPCS.get(name)
    if rpc is None:
        rpc = Rpc(name, None, Category.OTHER, False, Action.NONE, ())
    return rpc


# --- the pymilvus ORM API ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrmEntry:
    """An ORM call, audited as the catalog operation it performs.

    `renames` maps the operation's parameter names to the ORM's (`filter` is `expr`
    there). `owner` says where the collection comes from: the `Collection`/`Partition`
    object itself, or the call's arguments (`utility`). `with_param` switches to another
    operation when that argument is given (`Collection(name, schema)` creates).
    """

    operation: str | None  # None: local, no server call
    renames: Mapping[str, str] = field(default_factory=dict)
    with_param: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class OrmOwner:
    """What an ORM object says about its calls: the attribute its own `_name` fills, if any."""

    name_attribute: str | None = None
    name_is_list: bool = False


ORM_OWNERS: Mapping[str, OrmOwner] = {
    "connections": OrmOwner(),
    "utility": OrmOwner(),
    "Collection": OrmOwner(),  # the collection name comes from the object itself
    "Index": OrmOwner(),
    "Partition": OrmOwner("db.milvus.partition_names", name_is_list=True),
    "Role": OrmOwner("milvus_audit.target.role"),
}
# The parameters that name an ORM call's connection alias, in order of preference.
ORM_ALIAS_PARAMS = ("using", "alias")


_ORM_FILTER = {"filter": "expr"}
_ORM_WRITE = {"partition_names": "partition_name"}
_ORM_SEARCH = {"filter": "expr", "search_params": "param"}


def _orm(operation: str | None, **renames: str) -> OrmEntry:
    return OrmEntry(operation, renames)


ORM: Mapping[str, OrmEntry] = {
    # connections
    "connections.connect": _orm("connect"),
    "connections.disconnect": _orm("close"),
    "connections.async_disconnect": _orm("close"),
    "connections.add_connection": _orm(None),
    "connections.remove_connection": _orm(None),
    "connections.async_remove_connection": _orm(None),
    "connections.get_connection_addr": _orm(None),
    "connections.has_connection": _orm(None),
    "connections.list_connections": _orm(None),
    # Collection
    "Collection.__init__": OrmEntry("describe_collection", {"collection_name": "name"},
                                    with_param=("schema", "create_collection")),
    "Collection.search": OrmEntry("search", _ORM_SEARCH),
    "Collection.hybrid_search": _orm("hybrid_search"),
    "Collection.query": OrmEntry("query", _ORM_FILTER),
    "Collection.query_iterator": OrmEntry("query_iterator", _ORM_FILTER),
    "Collection.search_iterator": OrmEntry("search_iterator", _ORM_SEARCH),
    "Collection.insert": _orm("insert"),
    "Collection.upsert": _orm("upsert"),
    "Collection.delete": OrmEntry("delete", _ORM_FILTER),
    "Collection.truncate": _orm("truncate_collection"),
    "Collection.drop": _orm("drop_collection"),
    "Collection.describe": _orm("describe_collection"),
    "Collection.load": _orm("load_collection"),
    "Collection.release": _orm("release_collection"),
    "Collection.flush": _orm("flush"),
    "Collection.compact": _orm("compact"),
    "Collection.get_compaction_state": _orm("get_compaction_state"),
    "Collection.get_compaction_plans": _orm("get_compaction_plans"),
    "Collection.wait_for_compaction_completed": _orm("get_compaction_state"),
    "Collection.create_index": _orm("create_index"),
    "Collection.drop_index": _orm("drop_index"),
    "Collection.alter_index": _orm("alter_index_properties"),
    "Collection.has_index": _orm("describe_index"),
    "Collection.index": _orm("describe_index"),
    "Collection.create_partition": _orm("create_partition"),
    "Collection.drop_partition": _orm("drop_partition"),
    "Collection.has_partition": _orm("has_partition"),
    "Collection.partition": _orm("has_partition"),
    "Collection.get_replicas": _orm("describe_replica"),
    "Collection.set_properties": _orm("alter_collection_properties"),
    "Collection.construct_from_dataframe": _orm("create_collection"),
    # Partition
    "Partition.__init__": _orm("create_partition"),
    "Partition.search": OrmEntry("search", _ORM_SEARCH),
    "Partition.hybrid_search": _orm("hybrid_search"),
    "Partition.query": OrmEntry("query", _ORM_FILTER),
    "Partition.insert": _orm("insert"),
    "Partition.upsert": _orm("upsert"),
    "Partition.delete": OrmEntry("delete", _ORM_FILTER),
    "Partition.load": _orm("load_partitions"),
    "Partition.release": _orm("release_partitions"),
    "Partition.drop": _orm("drop_partition"),
    "Partition.flush": _orm("flush"),
    "Partition.get_replicas": _orm("describe_replica"),
    # Index
    "Index.__init__": _orm("create_index"),
    "Index.drop": _orm("drop_index"),
    "Index.to_dict": _orm(None),
    # Role
    "Role.__init__": _orm(None),
    "Role.create": _orm("create_role"),
    "Role.drop": _orm("drop_role"),
    "Role.add_user": OrmEntry("grant_role", {"user_name": "username"}),
    "Role.remove_user": OrmEntry("revoke_role", {"user_name": "username"}),
    "Role.get_users": _orm("describe_role"),
    "Role.is_exist": _orm("describe_role"),
    "Role.grant": OrmEntry("grant_privilege", {"object_type": "object"}),
    "Role.revoke": OrmEntry("revoke_privilege", {"object_type": "object"}),
    "Role.grant_v2": _orm("grant_privilege_v2"),
    "Role.revoke_v2": _orm("revoke_privilege_v2"),
    "Role.list_grant": _orm("describe_role"),
    "Role.list_grants": _orm("describe_role"),
    "Role.create_privilege_group": _orm("create_privilege_group"),
    "Role.drop_privilege_group": _orm("drop_privilege_group"),
    "Role.list_privilege_groups": _orm("list_privilege_groups"),
    "Role.add_privileges_to_group": _orm("add_privileges_to_group"),
    "Role.remove_privileges_from_group": _orm("remove_privileges_from_group"),
    # utility
    "utility.has_collection": _orm("has_collection"),
    "utility.has_partition": _orm("has_partition"),
    "utility.list_collections": _orm("list_collections"),
    "utility.drop_collection": _orm("drop_collection"),
    "utility.truncate_collection": _orm("truncate_collection"),
    "utility.rename_collection": _orm("rename_collection"),
    "utility.create_alias": _orm("create_alias"),
    "utility.alter_alias": _orm("alter_alias"),
    "utility.drop_alias": _orm("drop_alias"),
    "utility.list_aliases": _orm("list_aliases"),
    "utility.list_indexes": _orm("list_indexes"),
    "utility.index_building_progress": _orm("describe_index"),
    "utility.wait_for_index_building_complete": _orm("describe_index"),
    "utility.loading_progress": _orm("get_load_state"),
    "utility.load_state": _orm("get_load_state"),
    "utility.wait_for_loading_complete": _orm("get_load_state"),
    "utility.get_query_segment_info": _orm("list_loaded_segments"),
    "utility.load_balance": _orm("transfer_replica"),
    "utility.flush_all": _orm("flush_all"),
    "utility.get_server_version": _orm("get_server_version"),
    "utility.get_server_type": _orm("get_server_type"),
    "utility.create_user": OrmEntry("create_user", {"user_name": "user"}),
    "utility.delete_user": OrmEntry("drop_user", {"user_name": "user"}),
    "utility.update_password": OrmEntry("update_password", {"user_name": "user"}),
    "utility.reset_password": OrmEntry("update_password", {"user_name": "user"}),
    "utility.list_usernames": _orm("list_users"),
    "utility.list_users": _orm("list_users"),
    "utility.list_user": OrmEntry("describe_user", {"user_name": "username"}),
    "utility.list_roles": _orm("list_roles"),
    "utility.create_resource_group": _orm("create_resource_group"),
    "utility.drop_resource_group": _orm("drop_resource_group"),
    "utility.describe_resource_group": _orm("describe_resource_group"),
    "utility.list_resource_groups": _orm("list_resource_groups"),
    "utility.update_resource_groups": _orm("update_resource_groups"),
    "utility.transfer_node": _orm("update_resource_groups"),
    "utility.transfer_replica": _orm("transfer_replica"),
    "utility.do_bulk_insert": _orm("bulk_insert"),
    "utility.get_bulk_insert_state": _orm("get_bulk_insert_state"),
    "utility.list_bulk_insert_tasks": _orm("list_bulk_insert_tasks"),
    "utility.hybridts_to_datetime": _orm(None),
    "utility.hybridts_to_unixtime": _orm(None),
    "utility.mkts_from_datetime": _orm(None),
    "utility.mkts_from_hybridts": _orm(None),
    "utility.mkts_from_unixtime": _orm(None),
}
