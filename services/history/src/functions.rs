//! SQL functions clawline registers over DataFusion's own.
//!
//! `cardinality(list)`: DataFusion 55 counts a list's elements by slicing every row into an array of
//! its own and walking it, which made `sum(cardinality(response_ids))` over ten million steps twice
//! as slow as DuckDB's `len`. For a list of scalars (every list column clawline has: token ids,
//! logprobs) the count is the difference of two offsets; this version reads it from there and hands
//! every other input (nested lists, maps, scalars) to DataFusion's own, so results never differ.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, UInt64Array};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions_nested::cardinality::Cardinality;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Registers clawline's functions on `ctx`, replacing DataFusion's of the same names.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(FlatCardinality::default()));
}

#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct FlatCardinality {
    inner: Cardinality,
}

impl ScalarUDFImpl for FlatCardinality {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(array)] = args.args.as_slice() {
            let lengths = match array.data_type() {
                DataType::List(f) if !is_nested(f.data_type()) => {
                    array.as_list_opt::<i32>().map(offset_lengths)
                }
                DataType::LargeList(f) if !is_nested(f.data_type()) => {
                    array.as_list_opt::<i64>().map(offset_lengths)
                }
                _ => None,
            };
            if let Some(lengths) = lengths {
                return Ok(ColumnarValue::Array(lengths));
            }
        }
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Types whose elements DataFusion's `cardinality` would count recursively.
fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
    )
}

/// Each row's element count (null for a null row), from the offsets alone.
fn offset_lengths<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> ArrayRef {
    let lengths = list.offsets().lengths().map(|n| n as u64).collect();
    Arc::new(UInt64Array::new(lengths, list.nulls().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::ListArray;
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::Int32Type;
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;

    /// A flat list column (nulls, empties, null elements; a second, sliced batch) and a nested one.
    fn tables() -> (MemTable, MemTable) {
        let flat = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2), Some(3)]),
            None,
            Some(vec![]),
            Some(vec![Some(4), None]),
            Some(vec![Some(5)]),
        ]);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ids",
            flat.data_type().clone(),
            true,
        )]));
        let batch = |ids: ArrayRef| batch_of(schema.clone(), ids);
        let sliced: ArrayRef = Arc::new(flat.slice(1, 4));
        let flat_table = MemTable::try_new(
            schema.clone(),
            vec![vec![batch(Arc::new(flat.clone())), batch(sliced)]],
        )
        .unwrap();
        let nested = ListArray::new(
            Arc::new(Field::new_list_field(flat.data_type().clone(), true)),
            OffsetBuffer::from_lengths([2, 0, 3]),
            Arc::new(flat),
            None,
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ids",
            nested.data_type().clone(),
            true,
        )]));
        let nested_table = MemTable::try_new(
            schema.clone(),
            vec![vec![batch_of(schema, Arc::new(nested))]],
        )
        .unwrap();
        (flat_table, nested_table)
    }

    fn batch_of(schema: Arc<Schema>, ids: ArrayRef) -> RecordBatch {
        RecordBatch::try_new(schema, vec![ids]).unwrap()
    }

    async fn answers(ours: bool) -> Vec<String> {
        let ctx = SessionContext::new();
        if ours {
            register(&ctx);
        }
        let (flat, nested) = tables();
        ctx.register_table("t", Arc::new(flat)).unwrap();
        ctx.register_table("n", Arc::new(nested)).unwrap();
        let mut out = Vec::new();
        for sql in [
            "SELECT cardinality(ids) AS c FROM t",
            "SELECT cardinality(ids) AS c FROM n",
            "SELECT sum(cardinality(ids)) AS c FROM t",
        ] {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            out.push(
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string(),
            );
        }
        out
    }

    /// The same answers as DataFusion's own `cardinality`, nested lists included.
    #[tokio::test]
    async fn counts_match_datafusions_own() {
        let ours = answers(true).await;
        assert_eq!(ours, answers(false).await);
        // Not vacuous: a null row stays null, an empty list counts 0, null elements count.
        assert!(
            ours[0].contains("|   |") && ours[0].contains("| 0 |"),
            "{}",
            ours[0]
        );
        assert!(ours[2].contains("| 9 |"), "{}", ours[2]);
    }
}
