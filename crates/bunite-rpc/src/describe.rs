//! What a `#[cap]` trait says about itself, for generators of bindings in other languages
//! (`typescript::Bindings`, behind the `typescript` feature, is one).
//!
//! Every `#[cap]` trait's marker implements [`DescribeCap<D>`] for any describer `D` that can
//! describe each of the trait's param, result and stream item types ([`DescribeType<T>`]).
//! The bound sits on the describer, not on the types, so a cap whose types a given generator
//! does not know still compiles: only asking that generator for it fails, with the missing
//! type named in the error. That is why describing is generic rather than a method every cap
//! must support.
//!
//! A describer is told the cap ([`CapInfo`]), then each method in declared order
//! ([`MethodInfo`], what its client sends as [`Params`], what it [`Yields`]). Caps that a method
//! returns are named by their wire name; the describer resolves them among the caps it was
//! asked for.

use crate::typed::Cap;

/// A cap as its trait declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapInfo {
    /// The wire name (`"interop.counter"`).
    pub name: &'static str,
    /// The version sent at bootstrap, if any.
    pub version: Option<&'static str>,
    /// The Rust trait's name (`"InteropCounter"`).
    pub rust_name: &'static str,
    /// The trait's doc comment, one line per `///` line (leading space removed).
    pub docs: &'static str,
}

/// One method as its trait declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The wire name (`"makeChild"`).
    pub name: &'static str,
    /// The Rust method's name (`"make_child"`).
    pub rust_name: &'static str,
    /// The method's doc comment.
    pub docs: &'static str,
    /// `#[cap(idempotent)]`.
    pub idempotent: bool,
    /// `#[cap(dispose)]`: the cap's disposal method.
    pub disposal: bool,
    /// A stream's `initial_credit`, when the trait sets one (otherwise the default, 32).
    pub initial_credit: Option<u32>,
}

/// What a method's client sends as the call's `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Params<T> {
    /// No params argument: `args` is undefined.
    None,
    /// A params argument of the described type.
    Required(T),
    /// A params argument spelled `Option<…>` (described whole): the client may leave it out.
    Optional(T),
}

/// What a method yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Yields<T> {
    /// A call returning a value of the described type.
    Value(T),
    /// A call returning one cap, by wire name.
    Cap(String),
    /// A call returning an array of caps of one definition.
    CapArray(String),
    /// A call returning a string-keyed record of caps of one definition.
    CapRecord(String),
    /// A stream of values of the described type.
    Stream(T),
}

/// Something that collects descriptions of caps.
pub trait Describer {
    /// The description of one Rust type (for TypeScript, its type expression).
    type Type;

    /// Starts a cap; its methods follow.
    fn cap(&mut self, cap: CapInfo);

    /// One method of the cap started last.
    fn method(
        &mut self,
        method: MethodInfo,
        params: Params<Self::Type>,
        yields: Yields<Self::Type>,
    );
}

/// A describer that can describe the Rust type `T`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot describe the type `{T}`",
    note = "for TypeScript, derive `ts_rs::TS` for `{T}` (see `bunite_rpc::typescript`)"
)]
pub trait DescribeType<T: ?Sized>: Describer {
    /// The description of `T`.
    fn describe_type(&mut self) -> Self::Type;
}

/// A cap that can describe itself to the describer `D`. `#[cap]` implements it for every
/// marker, for every `D` that can describe the trait's types.
pub trait DescribeCap<D: Describer>: Cap {
    /// Tells `describer` about this cap and its methods.
    fn describe(describer: &mut D);
}

/// How a describer learns the wire name of a cap a method returns (how [`Yields`] names
/// it). Every describer can, for every cap; it is a bound on the describer so that a trait
/// naming something that is not a cap reports that once, where the trait uses it, and not
/// again from its description.
pub trait DescribeReturn<C: ?Sized>: Describer {
    /// The wire name of `C`.
    fn cap_name(&mut self) -> String;
}

impl<D: Describer + ?Sized, C: Cap> DescribeReturn<C> for D {
    fn cap_name(&mut self) -> String {
        C::definition().name().to_owned()
    }
}
