//! SQL over a run root with DataFusion: every table the catalog lists with committed data,
//! registered by name over exactly the objects its commits name; the `cosine_sim` UDF; the
//! compiled-in queries of `sql/*.sql` (thresholds are parameters, never formatted into the
//! text); and a read-only session for analysts, where `SHOW TABLES` lists each table with its
//! rows, objects and latest generation, and `DESCRIBE` and `information_schema` work.
//!
//! Every session also has the view `dino_vectors` (`key`, `uri`, `dino`): the DINOv2 vector of
//! every image that has one, wherever it was written: the `dino` column of `embeddings` shards
//! embedded with both encoders, and the `dino` table of `blindspot dino`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray,
    UInt64Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::cosine;
use crate::error::{Error, Result};
use crate::storage::Location;
use crate::table::{self, Catalog, Generations, TableStatus};

/// The compiled-in queries, by file name.
pub mod queries {
    /// `sql/similarities.sql`: every candidate with its CLIP and DINOv2 similarities (over
    /// the tables `candidates` and `dino_vectors`).
    pub const SIMILARITIES: &str = include_str!("../sql/similarities.sql");
    /// `sql/pairs.sql`: the rows of `similarities` whose DINOv2 similarity is below `$1`,
    /// with run id `$2`.
    pub const PAIRS: &str = include_str!("../sql/pairs.sql");
    /// `sql/group_pairs.sql`: one row per pair of near-duplicate groups (over `pairs` with
    /// its group columns).
    pub const GROUP_PAIRS: &str = include_str!("../sql/group_pairs.sql");
    /// `sql/annotate.sql`: the mined pairs, most CLIP-blind first.
    pub const ANNOTATE: &str = include_str!("../sql/annotate.sql");
}

/// `cosine_sim(a, b)`: cosine similarity of two `FixedSizeList<Float32 | Float16>` columns of
/// one size (or two raw vector columns, `table::io::raw_vector_field`), as Float32; null where
/// either side is null or has zero length.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CosineSim {
    signature: Signature,
}

impl Default for CosineSim {
    fn default() -> Self {
        CosineSim {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn vector_type(t: &DataType) -> Option<i32> {
    match t {
        DataType::FixedSizeList(item, n)
            if matches!(item.data_type(), DataType::Float32 | DataType::Float16) =>
        {
            Some(*n)
        }
        _ => None,
    }
}

impl ScalarUDFImpl for CosineSim {
    fn name(&self) -> &str {
        "cosine_sim"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match (
            vector_type(&args[0]),
            vector_type(&args[1]),
            &args[0],
            &args[1],
        ) {
            (Some(a), Some(b), _, _) if a == b => Ok(DataType::Float32),
            // Raw vectors (`io::raw_vector_field`), their element type in the field's metadata.
            (_, _, DataType::FixedSizeBinary(a), DataType::FixedSizeBinary(b)) if a == b => {
                Ok(DataType::Float32)
            }
            // A raw vector against a list (`cells.clip` against `embeddings.clip`): the
            // dimensions are compared once the raw bytes are read by their element type.
            (Some(_), None, _, DataType::FixedSizeBinary(_))
            | (None, Some(_), DataType::FixedSizeBinary(_), _) => Ok(DataType::Float32),
            _ => Err(datafusion::error::DataFusionError::Plan(format!(
                "cosine_sim takes two FixedSizeList<Float32 or Float16> of one size, got {} and {}",
                args[0], args[1]
            ))),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let lists = arrays
            .iter()
            .zip(&args.arg_fields)
            .map(|(a, f)| {
                table::io::vectors_of(a, f).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!("cosine_sim: {e}"))
                })
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let out = cosine_arrays(&lists[0], &lists[1])?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            debug_assert_eq!(out.len(), n);
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// The rows of a vector column, as stored (f32 or f16; other float types widened to f32
/// through Arrow's cast kernel, into `cast`).
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl<'a> Rows<'a> {
    fn of(
        list: &'a FixedSizeListArray,
        cast: &'a mut Option<Float32Array>,
    ) -> datafusion::error::Result<Self> {
        let dim = list.value_length() as usize;
        let from = list.offset() * dim;
        let values = list.values();
        Ok(match values.data_type() {
            DataType::Float32 => Rows::F32(&values.as_primitive::<Float32Type>().values()[from..]),
            DataType::Float16 => Rows::F16(
                &values
                    .as_primitive::<arrow::datatypes::Float16Type>()
                    .values()[from..],
            ),
            _ => {
                let widened = arrow::compute::cast(values, &DataType::Float32)?;
                let widened = cast.insert(widened.as_primitive::<Float32Type>().clone());
                Rows::F32(&widened.values()[from..])
            }
        })
    }

    /// Row `i` (of `dim` values).
    fn row(&self, i: usize, dim: usize) -> cosine::Row<'a> {
        match self {
            Rows::F32(v) => cosine::Row::F32(&v[i * dim..(i + 1) * dim]),
            Rows::F16(v) => cosine::Row::F16(&v[i * dim..(i + 1) * dim]),
        }
    }
}

/// Row-wise cosine similarity of two vector arrays of equal length.
pub fn cosine_arrays(a: &ArrayRef, b: &ArrayRef) -> datafusion::error::Result<ArrayRef> {
    let (a, b) = (a.as_fixed_size_list(), b.as_fixed_size_list());
    let dim = a.value_length() as usize;
    if b.value_length() as usize != dim || a.len() != b.len() {
        return Err(datafusion::error::DataFusionError::Execution(format!(
            "cosine_sim: {} rows of {} against {} rows of {}",
            a.len(),
            dim,
            b.len(),
            b.value_length()
        )));
    }
    let (mut ca, mut cb) = (None, None);
    let (ra, rb) = (Rows::of(a, &mut ca)?, Rows::of(b, &mut cb)?);
    let mut bufs = Default::default();
    let nulls = NullBuffer::union(a.logical_nulls().as_ref(), b.logical_nulls().as_ref());
    let sims: Vec<f32> = (0..a.len())
        .map(|i| match nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            true => f32::NAN,
            false => cosine::cosine(ra.row(i, dim), rb.row(i, dim), &mut bufs),
        })
        .collect();
    // A zero vector has no direction: null rather than NaN.
    let zero = NullBuffer::from(sims.iter().map(|s| !s.is_nan()).collect::<Vec<_>>());
    let nulls = NullBuffer::union(nulls.as_ref(), Some(&zero));
    Ok(Arc::new(Float32Array::new(sims.into(), nulls)))
}

/// blindspot's scalar functions (`cosine_sim`), registered in every session, local or on a
/// cluster.
pub fn udfs() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(CosineSim::default()))]
}

/// A DataFusion session with blindspot's UDFs and no tables yet (for local files; tables over
/// another store need it registered, as `session` does).
pub fn bare_session() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    for udf in udfs() {
        ctx.register_udf(udf.as_ref().clone());
    }
    ctx
}

/// A DataFusion session over `root` with its tables and blindspot's UDFs registered. Returns
/// the names of the registered tables too.
pub async fn session(root: &Location) -> Result<(SessionContext, Vec<String>)> {
    let ctx = bare_session();
    register_store(&ctx, root)?;
    let names = register_root(&ctx, root).await?;
    Ok((ctx, names))
}

/// A session over `root`'s store (no tables registered) whose queries stay within `memory`
/// bytes, spilling sorts, aggregates and joins to temporary files beyond it: joins are planned
/// as sort-merge joins, which spill, instead of hash joins, which must hold their build side.
pub fn spilling_session(root: &Location, memory: usize) -> Result<SessionContext> {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut config = SessionConfig::new();
    config.options_mut().optimizer.prefer_hash_join = false;
    // Each sort sets this aside for its merge; DataFusion's 10 MiB would leave a small pool
    // nothing to sort with.
    config.options_mut().execution.sort_spill_reservation_bytes = (memory / 32).max(64 << 10);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register_store(&ctx, root)?;
    Ok(ctx)
}

/// Registers `root`'s object store on `ctx` (local files need none).
fn register_store(ctx: &SessionContext, root: &Location) -> Result<()> {
    let base = url::Url::parse(&root.url).map_err(|e| Error::Url {
        url: root.url.clone(),
        reason: e.to_string(),
    })?;
    let store_url = url::Url::parse(&format!(
        "{}://{}",
        base.scheme(),
        base.host_str().unwrap_or("")
    ))
    .map_err(|e| Error::Url {
        url: root.url.clone(),
        reason: e.to_string(),
    })?;
    if base.scheme() != "file" {
        ctx.register_object_store(&store_url, root.store.clone());
    }
    Ok(())
}

/// Registers every table of `root` with committed data, `blindspot.tables` and the
/// `dino_vectors` view on `ctx` (a local session or a cluster client); returns the tables'
/// names.
pub async fn register_root(ctx: &SessionContext, root: &Location) -> Result<Vec<String>> {
    let catalog = Catalog::new(root);
    let listed = catalog.list().await?;
    let mut names = Vec::new();
    for status in &listed {
        register_objects(ctx, root, status.name, &status.paths).await?;
        names.push(status.name.to_string());
    }
    register_table_list(ctx, &listed)?;
    let vectors = register_dino_vectors(ctx, root).await?;
    let has = |t: &str| names.iter().any(|n| n == t);
    if vectors && has(table::CANDIDATES.name) {
        register_view(ctx, SIMILARITIES, queries::SIMILARITIES).await?;
    }
    if has(table::PAIRS.name) {
        register_grouped_pairs(ctx, has(table::GROUPS.name)).await?;
    }
    Ok(names)
}

/// The view of every candidate with both similarities (`sql/similarities.sql`).
pub const SIMILARITIES: &str = "similarities";
/// The view of one row per pair of near-duplicate groups (`sql/group_pairs.sql`).
pub const GROUP_PAIRS: &str = "group_pairs";

async fn register_view(ctx: &SessionContext, name: &str, query: &str) -> Result<()> {
    let view = ctx
        .sql(query)
        .await
        .map_err(|e| Error::table(name, e))?
        .into_view();
    ctx.register_table(name, view)
        .map_err(|e| Error::table(name, e))?;
    Ok(())
}

/// Replaces `pairs` with a view of it that carries each side's near-duplicate group and
/// group size (`a_group`, `a_group_size`, `b_group`, `b_group_size`; null and 1 for an image
/// in no group, or before `groups` exists), and registers `group_pairs` over it.
async fn register_grouped_pairs(ctx: &SessionContext, groups: bool) -> Result<()> {
    let query = match groups {
        true => {
            "SELECT p.*, ga.\"group\" AS a_group, COALESCE(ga.size, 1) AS a_group_size, \
             gb.\"group\" AS b_group, COALESCE(gb.size, 1) AS b_group_size \
             FROM pairs p LEFT JOIN groups ga ON ga.key = p.a LEFT JOIN groups gb ON gb.key = p.b"
        }
        false => {
            "SELECT p.*, CAST(NULL AS BIGINT) AS a_group, CAST(1 AS BIGINT) AS a_group_size, \
             CAST(NULL AS BIGINT) AS b_group, CAST(1 AS BIGINT) AS b_group_size FROM pairs p"
        }
    };
    let view = ctx
        .sql(query)
        .await
        .map_err(|e| Error::table(table::PAIRS.name, e))?
        .into_view();
    ctx.deregister_table(table::PAIRS.name)
        .map_err(|e| Error::table(table::PAIRS.name, e))?;
    ctx.register_table(table::PAIRS.name, view)
        .map_err(|e| Error::table(table::PAIRS.name, e))?;
    register_view(ctx, GROUP_PAIRS, queries::GROUP_PAIRS).await
}

/// The name of the view of every DINOv2 vector.
pub const DINO_VECTORS: &str = "dino_vectors";

/// Registers the view `dino_vectors` (`key`, `uri`, `dino`) over the `embeddings` objects that
/// have a `dino` column and the `dino` table; returns false (and registers nothing) when the
/// root has no DINOv2 vectors at all.
pub async fn register_dino_vectors(ctx: &SessionContext, root: &Location) -> Result<bool> {
    let catalog = Catalog::new(root);
    let mut frames = Vec::new();
    for (name, paths) in dino_objects(&catalog).await? {
        let t = listing_table(ctx, root, name, &paths).await?;
        let df = ctx
            .read_table(t)
            .and_then(|df| df.select_columns(&["key", "uri", "dino"]))
            .map_err(|e| Error::table(DINO_VECTORS, format!("{name}: {e}")))?;
        frames.push(df);
    }
    let Some(first) = frames.pop() else {
        return Ok(false);
    };
    let view = match frames.pop() {
        Some(other) => other
            .union(first)
            .map_err(|e| Error::table(DINO_VECTORS, format!("embeddings.dino and the dino table do not match (same float type and dimension needed): {e}")))?,
        None => first,
    };
    ctx.deregister_table(DINO_VECTORS)
        .map_err(|e| Error::table(DINO_VECTORS, e))?;
    ctx.register_table(DINO_VECTORS, view.into_view())
        .map_err(|e| Error::table(DINO_VECTORS, e))?;
    Ok(true)
}

/// Where the DINOv2 vectors of a run root are: the `embeddings` objects of shards embedded with
/// both encoders, and the objects of the `dino` table, by table name (tables with none are left
/// out). Each object has the columns `key`, `uri` and `dino`.
pub async fn dino_objects(catalog: &Catalog) -> Result<Vec<(&'static str, Vec<String>)>> {
    let mut embedded = Vec::new();
    for (c, r) in catalog.records::<table::records::EmbedCommit>().await? {
        if !r.without_dino() {
            embedded.extend(c.objects(&table::EMBEDDINGS).into_iter().map(|o| o.path));
        }
    }
    let later = catalog.paths(&table::DINO, Generations::All).await?;
    Ok([
        (table::EMBEDDINGS.name, embedded),
        (table::DINO.name, later),
    ]
    .into_iter()
    .filter(|(_, paths)| !paths.is_empty())
    .collect())
}

/// Registers (or replaces) table `name` of `ctx` as the Parquet objects `paths` of `root`
/// (relative paths).
pub async fn register_objects(
    ctx: &SessionContext,
    root: &Location,
    name: &str,
    paths: &[String],
) -> Result<()> {
    let table = listing_table(ctx, root, name, paths).await?;
    ctx.deregister_table(name)
        .map_err(|e| Error::table(name, e))?;
    ctx.register_table(name, table)
        .map_err(|e| Error::table(name, e))?;
    Ok(())
}

/// The error of a table whose objects could not be read, naming the first object whose
/// footer does not read (DataFusion's message names none).
async fn name_the_damaged(
    root: &Location,
    name: &str,
    paths: &[String],
    e: datafusion::error::DataFusionError,
) -> Error {
    for p in paths {
        if let Err(bad) = table::io::object_metadata(root, p).await {
            return Error::table(
                name,
                format!(
                    "{} cannot be read ({bad}); the object is damaged or not Parquet",
                    root.uri_of(&root.path(p))
                ),
            );
        }
    }
    Error::table(name, e)
}

/// A listing table over the Parquet objects `paths` of `root`. Its schema is the merge of
/// the objects' schemas; for `embeddings` every column is nullable, because shards embedded
/// with CLIP only have no `dino` column and older shards no `caption` or `url`.
async fn listing_table(
    ctx: &SessionContext,
    root: &Location,
    name: &str,
    paths: &[String],
) -> Result<Arc<ListingTable>> {
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(root.uri_of(&root.path(p))))
        .collect::<datafusion::error::Result<Vec<_>>>()
        .map_err(|e| Error::table(name, e))?;
    let options = ListingOptions::new(Arc::new(
        // Plain Utf8 strings, as the tables are written, rather than DataFusion's Utf8View.
        ParquetFormat::default().with_force_view_types(false),
    ))
    .with_file_extension(".parquet");
    let config = match ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await
    {
        Ok(config) => config,
        Err(e) => return Err(name_the_damaged(root, name, paths, e).await),
    };
    let config = if name == table::EMBEDDINGS.name {
        let schema = config
            .file_schema
            .clone()
            .ok_or_else(|| Error::Internal("inferred schema missing".into()))?;
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        // Roots embedded before captions and URLs were kept have neither column: the table
        // still has them, null in those shards, so every query reads every layout.
        for optional in ["caption", "url"] {
            if schema.index_of(optional).is_err() {
                fields.push(Field::new(optional, DataType::Utf8, true));
            }
        }
        let nullable = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        config.with_schema(nullable)
    } else {
        config
    };
    let config = with_raw_item_types(root, paths, config).await?;
    let table = ListingTable::try_new(config).map_err(|e| Error::table(name, e))?;
    Ok(Arc::new(table))
}

/// `config` with the element type of its raw vector columns (`io::RAW_ITEM`, field metadata
/// that DataFusion's schema inference leaves out) taken from the first object's own schema, so
/// that `cosine_sim` reads `cells.clip` and `cells.dino`.
async fn with_raw_item_types(
    root: &Location,
    paths: &[String],
    config: ListingTableConfig,
) -> Result<ListingTableConfig> {
    let Some(schema) = config.file_schema.clone() else {
        return Ok(config);
    };
    let raw = |f: &Field| matches!(f.data_type(), DataType::FixedSizeBinary(_));
    let (Some(first), true) = (paths.first(), schema.fields().iter().any(|f| raw(f))) else {
        return Ok(config);
    };
    let own = table::io::object_metadata(root, first)
        .await?
        .schema()
        .clone();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match own.field_with_name(f.name()) {
            Ok(o) if raw(f) && o.data_type() == f.data_type() => {
                f.as_ref().clone().with_metadata(o.metadata().clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    let with = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(config.with_schema(with))
}

/// Registers (or replaces) table `name` of `ctx` as an empty table of `schema`.
pub fn register_empty(ctx: &SessionContext, name: &str, schema: SchemaRef) -> Result<()> {
    let table = MemTable::try_new(schema, vec![vec![]]).map_err(|e| Error::table(name, e))?;
    ctx.deregister_table(name)
        .map_err(|e| Error::table(name, e))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| Error::table(name, e))?;
    Ok(())
}

/// The schema holding `blindspot.tables`, the catalog's own list.
const LIST_SCHEMA: &str = "blindspot";

/// Registers `blindspot.tables`: one row per table with committed data.
fn register_table_list(ctx: &SessionContext, listed: &[TableStatus]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("objects", DataType::UInt64, false),
        Field::new("commits", DataType::UInt64, false),
        Field::new("generation", DataType::UInt64, false),
        Field::new("about", DataType::Utf8, false),
    ]));
    let column = |f: fn(&TableStatus) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(listed.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(listed.iter().map(|t| t.name))),
            column(|t| t.rows),
            column(|t| t.objects),
            column(|t| t.commits),
            column(|t| t.generation),
            Arc::new(StringArray::from_iter_values(
                listed.iter().map(|t| t.about),
            )),
        ],
    )
    .map_err(|e| Error::table("blindspot.tables", e))?;
    let list = MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| Error::table("blindspot.tables", e))?;
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| Error::Internal("the session has no default catalog".into()))?;
    let own = Arc::new(MemorySchemaProvider::new());
    own.register_table("tables".into(), Arc::new(list))
        .map_err(|e| Error::table("blindspot.tables", e))?;
    catalog
        .register_schema(LIST_SCHEMA, own)
        .map_err(|e| Error::table("blindspot.tables", e))?;
    Ok(())
}

/// `SHOW TABLES` answers from the catalog (rows, objects, generation); DataFusion's own list
/// stays at `information_schema.tables`.
fn rewrite_show_tables(sql: &str) -> Option<&'static str> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    (words == ["show", "tables"]).then_some(
        "SELECT table_name, rows, objects, commits, generation, about FROM blindspot.tables ORDER BY table_name",
    )
}

/// True for statements about the catalog rather than the data (`SHOW ...`, `DESCRIBE ...`,
/// `information_schema`, `blindspot.tables`): a cluster cannot run them (DataFusion does not
/// serialise those plans), so `blindspot sql --cluster` answers them in a local session.
pub fn is_catalog_query(sql: &str) -> bool {
    let lower = sql.trim().to_ascii_lowercase();
    lower.starts_with("show ")
        || lower == "show"
        || lower.starts_with("describe ")
        || lower.starts_with("desc ")
        || lower.contains("information_schema")
        || lower.contains("blindspot.tables")
}

/// What an analyst's query may not do.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans an analyst's query in the read-only session. Errors carry DataFusion's message and
/// the list of tables.
pub async fn query(ctx: &SessionContext, tables: &[String], sql: &str) -> Result<DataFrame> {
    let sql = rewrite_show_tables(sql).unwrap_or(sql);
    ctx.sql_with_options(sql, read_only()).await.map_err(|e| {
        let msg = e.to_string();
        let hint = if msg.contains("not supported") || msg.contains("Unsupported") {
            "blindspot sql is read-only: DDL, DML (INSERT, COPY, ...) and SET are refused; "
        } else {
            ""
        };
        Error::Usage(format!(
            "{hint}{msg}\n(tables: {}; functions: cosine_sim(a, b); SHOW TABLES, DESCRIBE <table>)",
            if tables.is_empty() {
                "none yet".to_string()
            } else {
                tables.join(", ")
            }
        ))
    })
}

/// Collects a data frame (for small results).
pub async fn collect(df: DataFrame) -> Result<Vec<RecordBatch>> {
    df.collect().await.map_err(|e| Error::table("query", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float16Array;
    use arrow::datatypes::Field;
    use proptest::prelude::*;

    fn list(values: Vec<f32>, dim: i32, f16: bool, nulls: Option<Vec<bool>>) -> ArrayRef {
        let (item, vals): (DataType, ArrayRef) = if f16 {
            (
                DataType::Float16,
                Arc::new(Float16Array::from(
                    values
                        .iter()
                        .map(|v| half::f16::from_f32(*v))
                        .collect::<Vec<_>>(),
                )),
            )
        } else {
            (DataType::Float32, Arc::new(Float32Array::from(values)))
        };
        Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", item, true)),
            dim,
            vals,
            nulls.map(NullBuffer::from),
        ))
    }

    fn reference(a: &[f32], b: &[f32]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        d / (na * nb)
    }

    proptest! {
        #[test]
        fn matches_a_reference_in_f32_and_f16(
            dim in 1usize..24,
            rows in proptest::collection::vec(proptest::collection::vec(-4.0f32..4.0, 48), 1..12),
        ) {
            let a: Vec<f32> = rows.iter().flat_map(|r| r[..dim].to_vec()).collect();
            let b: Vec<f32> = rows.iter().flat_map(|r| r[24..24 + dim].to_vec()).collect();
            for f16 in [false, true] {
                let out = cosine_arrays(&list(a.clone(), dim as i32, f16, None), &list(b.clone(), dim as i32, f16, None)).unwrap();
                let out = out.as_primitive::<Float32Type>();
                for (i, r) in rows.iter().enumerate() {
                    let (x, y) = (&r[..dim], &r[24..24 + dim]);
                    let (x, y): (Vec<f32>, Vec<f32>) = if f16 {
                        (x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect(), y.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect())
                    } else {
                        (x.to_vec(), y.to_vec())
                    };
                    let want = reference(&x, &y);
                    if want.is_nan() {
                        prop_assert!(out.is_null(i));
                    } else {
                        prop_assert!((out.value(i) as f64 - want).abs() < 1e-4, "row {} got {} want {}", i, out.value(i), want);
                    }
                }
            }
        }
    }

    #[test]
    fn nulls_propagate() {
        let a = list(vec![1.0, 0.0, 0.0, 1.0], 2, false, Some(vec![true, false]));
        let b = list(vec![1.0, 0.0, 0.0, 1.0], 2, false, None);
        let out = cosine_arrays(&a, &b).unwrap();
        let out = out.as_primitive::<Float32Type>();
        assert_eq!(out.value(0), 1.0);
        assert!(out.is_null(1));
    }

    /// Raw vectors (as the cells and a filter unit keep them) give what the lists give, bit for
    /// bit, through SQL and a join, and raw vectors without their element type are refused.
    #[tokio::test]
    async fn cosine_sim_reads_raw_vectors_through_a_join() {
        let values: Vec<f32> = (0..6 * 4).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let vectors = list(values, 4, true, None);
        let key = Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e", "f"])) as ArrayRef;
        let of = Field::new("dino", vectors.data_type().clone(), true);
        let raw_field = table::io::raw_vector_field("dino", &of);
        let raw = table::io::raw_vectors(&vectors, &raw_field).unwrap();
        let ctx = bare_session();
        for (name, field, column) in [
            ("lists", of.clone(), vectors.clone()),
            ("raws", raw_field.clone(), raw.clone()),
        ] {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![
                Field::new("key", DataType::Utf8, false),
                field,
            ]));
            let batch = RecordBatch::try_new(schema.clone(), vec![key.clone(), column]).unwrap();
            let t = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
            ctx.register_table(name, Arc::new(t)).unwrap();
        }
        let sims = |t: &'static str| {
            let ctx = ctx.clone();
            async move {
                let q = format!(
                    "SELECT x.key AS a, y.key AS b, cosine_sim(x.dino, y.dino) AS s \
                     FROM {t} x JOIN {t} y ON x.key < y.key ORDER BY a, b"
                );
                let batches = ctx.sql(&q).await.unwrap().collect().await.unwrap();
                batches
                    .iter()
                    .flat_map(|b| {
                        let s = b.column(2).as_primitive::<Float32Type>().clone();
                        (0..b.num_rows()).map(move |i| s.value(i).to_bits())
                    })
                    .collect::<Vec<u32>>()
            }
        };
        let (from_lists, from_raws) = (sims("lists").await, sims("raws").await);
        assert_eq!(from_lists.len(), 15);
        assert_eq!(from_lists, from_raws);
        // Without the element type the bytes mean nothing: refused, not guessed.
        let bare = Field::new("dino", raw_field.data_type().clone(), true);
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![bare]));
        let batch = RecordBatch::try_new(schema.clone(), vec![raw]).unwrap();
        let t = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("bare", Arc::new(t)).unwrap();
        let err = match ctx.sql("SELECT cosine_sim(dino, dino) FROM bare").await {
            Ok(df) => df.collect().await.unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("element type"), "{err}");
    }
}
