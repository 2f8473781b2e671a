// Package service runs the authz service an authzconfig.Config describes.
package service
