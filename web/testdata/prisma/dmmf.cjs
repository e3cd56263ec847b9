// Validates the Prisma schema on stdin with the engine `prisma validate`
// runs (prisma-schema-wasm, the version Prisma 6.19's CLI carries), then
// prints each model's table and fields as JSON: what the Go test compares
// with the real table. Exit status 1 and Prisma's message if invalid.
const wasm = require('@prisma/prisma-schema-wasm');
const schema = require('node:fs').readFileSync(0, 'utf8');
const params = JSON.stringify({ prismaSchema: [['schema.prisma', schema]], noColor: true });
try {
  wasm.validate(params);
} catch (e) {
  console.error(JSON.parse(String(e.message ?? e)).message ?? String(e));
  process.exit(1);
}
const { datamodel } = JSON.parse(wasm.get_dmmf(params));
console.log(JSON.stringify(datamodel.models.map((m) => ({
  name: m.name,
  table: m.dbName ?? m.name,
  fields: m.fields.filter((f) => f.kind === 'scalar').map((f) => ({
    name: f.name,
    column: f.dbName ?? f.name,
    type: f.type,
    nativeType: f.nativeType?.[0] ?? null,
    required: f.isRequired,
    // Whether the database must supply the default: Prisma Client makes
    // cuid(), uuid(), nanoid() and ulid() values itself.
    dbDefault: f.hasDefaultValue && !['cuid', 'uuid', 'nanoid', 'ulid'].includes(f.default?.name),
  })),
}))));
