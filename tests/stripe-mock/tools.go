//go:build tools

// Package tools pins the stripe-mock version that `start` builds.
package tools

import _ "github.com/stripe/stripe-mock"
