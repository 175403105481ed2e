// Package layout holds no code: its tests keep the architecture rules of
// Documentation/architecture.md true of the tree, by reading every package's
// imports and sources. They fail when a rule is broken, naming the package.
package layout
